"""Cost ratio c of the testbed pair: drafter decode-step time / target decode-step time.

Both models at their full vocabulary (151,936 rows; the LLaVA-OneVision drafter 152,064), loaded
by path through the backend's adapter, float32 on this CPU. For each test clip: prefill, then time single-token steps
(one `Session.extend` each, KV cache on) and K-token verify blocks; the models alternate
clip by clip so that both see the same machine load. Prints medians in ms and c.

    .venv/bin/python -m benchmarks.testbed_cost [--family qwen|llava_ov|qwen3_vl] [--clips 5] [--steps 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from testbed.paths import TESTBED_TASK_DIR as TASK_DIR


def main() -> None:
    import torch
    from tabulate import tabulate

    import importlib

    from lvspec_eval.lmms import BACKENDS
    from testbed.checkpoints import checkpoint
    from testbed.families import PAIRS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--k", type=int, default=10, help="verify block size (K+1 tokens per target forward)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--family", choices=sorted(PAIRS), default="qwen", help="which trained testbed pair")
    a = p.parse_args()
    pair = PAIRS[a.family]
    module, _, backend = BACKENDS[pair.model].rpartition(".")
    adapter_class = getattr(importlib.import_module(module), backend).adapter_class  # the pair's backend's adapter
    torch.set_num_threads(a.threads)
    video = dict(max_num_frames=8, min_pixels=3136, max_pixels=12544)
    models = {role: adapter_class.load(str(checkpoint(name)), dtype="float32", device_map="cpu", **video)
              for role, name in (("target", pair.target), ("drafter", pair.drafter))}
    docs = [json.loads(line) for line in (TASK_DIR / "caption.jsonl").read_text().splitlines()][: a.clips]
    step_ms: dict[str, list[float]] = {r: [] for r in models}
    block_ms: dict[str, list[float]] = {r: [] for r in models}
    for doc in docs:
        for role, adapter in models.items():
            clip = str(TASK_DIR / "videos" / doc["video"])
            msgs = [{"role": "user", "content": [{"type": "video", "video": clip, **adapter.video_kwargs([clip])},
                                                 {"type": "text", "text": doc["question"]}]}]
            session, prefill = adapter.start(adapter.prepare(msgs))
            tok = prefill.logits.argmax().view(1)
            for _ in range(a.steps):
                t0 = time.perf_counter()
                logits = session.extend(tok)
                tok = logits[-1].argmax().view(1)
                step_ms[role].append((time.perf_counter() - t0) * 1e3)
            for _ in range(5):
                ids = torch.full((a.k + 1,), int(tok))
                t0 = time.perf_counter()
                session.extend(ids)
                block_ms[role].append((time.perf_counter() - t0) * 1e3)
                session.crop(session.length - a.k - 1)
    med = {r: statistics.median(v) for r, v in step_ms.items()}
    blk = {r: statistics.median(v) for r, v in block_ms.items()}
    rows = [[r, f"{med[r]:.2f}", f"{blk[r]:.2f}", sum(p.numel() for p in models[r].model.parameters()) / 1e6]
            for r in models]
    print(tabulate(rows, headers=["model", "ms / decode step (median)", f"ms / {a.k + 1}-token block",
                                  "params (M)"], tablefmt="github", floatfmt=".1f"))
    print(f"\nc = drafter step / target step = {med['drafter'] / med['target']:.3f}  "
          f"({pair.described}; {a.clips} clips x {a.steps} steps, {a.threads} threads, float32)")


if __name__ == "__main__":
    main()
