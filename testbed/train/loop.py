"""The training loop of one role: vision pre-training, then batches of examples until a validation check
passes the role's bar (the target: a strong model; the drafter: an *early* checkpoint, weakened on
purpose so that it errs on anchors) or the time budget runs out (then the best check is kept). The
outcome, the reason for stopping and every check are written beside the weights."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed import clips
from testbed import grammar as g
from testbed.families import family, tied_embeddings
from testbed.train.data import Examples, collate, load_clip_tensors
from testbed.train.model import build_model, weighted_loss
from testbed.train.roles import ROLES
from testbed.train.validate import validate
from testbed.train.vision import pretrain_vision


def train(role: str, out: Path, n_train: int, n_val: int, batch: int, eval_every: int, max_minutes: float | None,
          threads: int, init_from: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train ``role`` (from scratch, or continuing ``init_from``) and write ``model.safetensors`` (the kept
    check's weights) and ``testbed.json`` (spec, real ids, stop reason, every check) to ``out``."""
    import torch
    from safetensors.torch import save_file

    from testbed.vocab import VocabMap, reduced_ids

    spec = ROLES[role]
    fam = family(spec.family)
    budget = spec.max_minutes if max_minutes is None else max_minutes
    torch.set_num_threads(threads)
    tok = fam.tokenizer()
    vmap = VocabMap(reduced_ids(tok, fam))
    ex = Examples(tok, vmap, fam.name)
    train_px = load_clip_tensors("train", n_train, fam.name)
    val_px = load_clip_tensors("val", n_val, fam.name)
    train_attrs = [clips.clip_attributes(s) for s in clips.split_seeds("train", n_train)]
    val_seeds = clips.split_seeds("val", n_val)

    model = build_model(spec, vmap, tok).train()
    previous: dict[str, Any] | None = None
    if init_from is not None:  # continue a run (fresh optimizer): its record is kept in testbed.json
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(init_from) / "model.safetensors")), strict=False)
        if tied_embeddings(model.config):
            model.tie_weights()
        previous = json.loads((Path(init_from) / "testbed.json").read_text())
        previous.pop("real_ids", None)
    model.to(device)
    vision = fam.vision_parameters(model)
    vision_ids = {id(p) for p in vision}
    text = [p for p in model.parameters() if id(p) not in vision_ids]
    opt = torch.optim.AdamW([{"params": text, "lr": spec.lr}, {"params": vision, "lr": spec.vision_lr_scale * spec.lr}],
                            weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    rng = random.Random(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    t0 = time.time()
    # a continued run starts where the first one ended: no second vision pre-training, no single-attribute warm-up
    fresh = init_from is None
    vision_log = pretrain_vision(model, spec, train_px, train_attrs, rng, batch, role) if spec.vision_pretrain and fresh else []
    step = 0
    reason = f"time budget of {budget:g} min reached; kept the best validation check"
    print(f"[{role}] {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params (reduced vocab {vmap.size}), "
          f"{n_train} train clips, {n_val} val clips, batch {batch}, {threads} thread(s)", flush=True)
    while True:
        idx = [rng.randrange(n_train) for _ in range(batch)]
        only = spec.warmup_attribute if fresh and step < spec.warmup_steps else None
        seqs = [ex.sample(train_attrs[i], rng, spec.style, only) for i in idx]
        loss = weighted_loss(model, collate(seqs, train_px[idx], int(ex.video_id), fam.name, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss diverged at step {step}")
        if step % eval_every:
            continue
        check = validate(model, ex, vmap, val_px, val_seeds)
        check.update(step=step, minutes=round((time.time() - t0) / 60, 2), loss=round(loss.item(), 4))
        history.append(check)
        print(f"[{role}] step {step} {check['minutes']:.1f} min loss {check['loss']:.3f} F1 {check['anchor_f1']:.3f} "
              + " ".join(f"{a[:3]} {check['attr_' + a]:.2f}" for a in g.ATTRIBUTES) + f" mcq {check['mcq']:.2f}"
              + (f" (mcq {spec.warmup_attribute} {check['mcq_' + spec.warmup_attribute]:.2f})" if spec.warmup_steps else ""),
              flush=True)
        key = check["anchor_f1"] + check["mcq"]
        passed = (check["anchor_f1"] >= spec.stop_f1 and check["min_attr"] >= spec.stop_min_attr
                  and check["mcq"] >= spec.stop_mcq)
        if best is None or key > best["key"] or passed:
            best = {"key": key, "check": check,
                    "state": {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}}
        if passed:
            reason = (f"validation check passed at step {step}: anchor_f1 {check['anchor_f1']:.3f} >= {spec.stop_f1}, "
                      f"min attribute {check['min_attr']:.2f} >= {spec.stop_min_attr}, mcq {check['mcq']:.2f} >= {spec.stop_mcq}")
            break
        if time.time() - t0 > budget * 60:
            break
    assert best is not None
    state = best["state"]
    if tied_embeddings(model.config):
        state.pop("lm_head.weight", None)  # tied to the embedding
    save_file(state, str(out / "model.safetensors"))
    info = {
        "role": role,
        "spec": asdict(spec),
        "real_ids": vmap.real_ids,
        "stop_reason": reason,
        "kept_check": {k: v for k, v in best["check"].items()},
        "train_minutes": round((time.time() - t0) / 60, 2),
        "threads": threads,
        "device": str(device),
        "n_train": n_train,
        "n_val": n_val,
        "batch": batch,
        "vision_pretraining": vision_log,
        "history": history,
        "torch": torch.__version__,
        "continued_from": previous,
    }
    (out / "testbed.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"[{role}] {reason}; wrote {out}", flush=True)
    return info
