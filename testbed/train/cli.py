"""Train the testbed's tiny target or drafter (Qwen2.5-VL, LLaVA-OneVision or Qwen3-VL) from scratch (CPU).

    python -m testbed.train --role target     # or drafter; `--role all` (`make testbed`): both
    python -m testbed.train --role llava_ov   # the LLaVA-OneVision pair (`make testbed-llava`)
    python -m testbed.train --role qwen3_vl   # the Qwen3-VL pair (`make testbed-qwen3`)

Data: seeded clips (``clips.py``) rendered, H.264 round-tripped (the pixels evaluation sees) and
turned into ``pixel_values_videos`` by the family's real video processor, cached once in
``$LVSPEC_CACHE/testbed/data-*``. Each training example is one of: a caption (the role's filler
style), the short attribute list, or a multiple-choice question; anchor tokens weigh 3x in the loss.
The model is the real ``Qwen2_5_VLForConditionalGeneration`` / ``LlavaOnevisionForConditionalGeneration`` /
``Qwen3VLForConditionalGeneration`` on a reduced vocabulary (``vocab.py``); what differs between the families is in ``families.py``.

Stopping is by a validation check, not a step count: every ``--eval-every`` steps the model
captions and answers MCQs greedily on held-out validation clips; training stops at the first
check that passes the role's bar (the target: a strong model; the drafter: an *early* checkpoint,
weakened on purpose so that it errs on anchors), or at ``--max-minutes`` (then the best check is kept).
The outcome, the reason for stopping and every check are written beside the weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from testbed.checkpoints import weights_dir
from testbed.train.data import clip_tensor_file
from testbed.train.loop import train
from testbed.train.roles import PAIRS, ROLES


def train_all(a: argparse.Namespace) -> None:
    """Train every role in its own process (one thread each), streaming their progress lines."""
    import subprocess

    t0 = time.time()
    procs = []
    roles = PAIRS[a.role]
    for role in roles:
        cmd = [sys.executable, "-m", "testbed.train", "--role", role, "--train-clips", str(a.train_clips),
               "--val-clips", str(a.val_clips), "--batch", str(a.batch), "--eval-every", str(a.eval_every),
               "--threads", "1"]
        if a.out is not None:
            cmd += ["--out", str(Path(a.out) / role)]
        if a.max_minutes is not None:
            cmd += ["--max-minutes", str(a.max_minutes)]
        if a.device != "cpu":
            cmd += ["--device", a.device]
        procs.append((role, subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"))))
    failed = [role for role, p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"training failed for {failed}")
    print(f"[testbed] trained {', '.join(roles)} in {(time.time() - t0) / 60:.1f} min", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m testbed.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=sorted(ROLES) + sorted(PAIRS), required=True,
                   help="a role, or a pair ('all': the Qwen2.5-VL pair, 'llava_ov': the LLaVA-OneVision pair, "
                        "'qwen3_vl': the Qwen3-VL pair): "
                        "encode the clips once, then train both roles side by side (one thread each)")
    p.add_argument("--out", type=Path, default=None, help="default: testbed/weights/<role>")
    p.add_argument("--train-clips", type=int, default=4000)
    p.add_argument("--val-clips", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--max-minutes", type=float, default=None, help="default: the role's budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu",
                   help="torch device for one role (e.g. cuda: minutes instead of an hour; the time budget and "
                        "the validation bars are the same, the weights are not bit-identical to a CPU run)")
    p.add_argument("--prepare-only", action="store_true", help="only encode the clip tensors (shared cache)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue from a trained folder (model.safetensors + testbed.json) instead of from scratch")
    a = p.parse_args(argv)
    if a.prepare_only or a.role in PAIRS:
        for name in sorted({ROLES[r].family for r in PAIRS.get(a.role, (a.role,))}):
            clip_tensor_file("train", a.train_clips, name)
            clip_tensor_file("val", a.val_clips, name)
        if a.prepare_only:
            return
    if a.role in PAIRS:
        return train_all(a)
    train(a.role, a.out or weights_dir(a.role), a.train_clips, a.val_clips, a.batch, a.eval_every, a.max_minutes,
          a.threads, a.init_from, a.device)


if __name__ == "__main__":
    sys.exit(main())
