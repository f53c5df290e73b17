"""Vision pre-training: the vision tower and projector trained alone, before the whole model."""

from __future__ import annotations

import random
import time
from typing import Any

from testbed import grammar as g
from testbed.families import family
from testbed.train.roles import RoleSpec


def pretrain_vision(model: Any, spec: RoleSpec, pixels: Any, attrs: list[g.Attributes], rng: random.Random,
                    batch: int, role: str) -> list[dict[str, Any]]:
    """Train the vision tower and projector alone, phase by phase (``spec.vision_pretrain``): linear
    heads on [mean, max] of the video features predict the phase's attributes (cross-entropy summed);
    the heads are discarded afterwards. For the Qwen target: motion, which the language model never
    learned to read from a vision tower trained only through it (a tower trained on motion alone
    separates moving / still in ~50 steps, five attributes at once did not in 200), comes first,
    then count and shape join it. Returns a log entry every 50 steps and at the end of each phase."""
    import torch
    import torch.nn.functional as F

    fam = family(spec.family)
    device = model.device
    vision = fam.vision_parameters(model)
    names = list(dict.fromkeys(a for phase, _ in spec.vision_pretrain for a in phase))
    labels = {a: torch.tensor([g.ATTRIBUTES[a].index(getattr(x, a)) for x in attrs], device=device) for a in names}
    heads: dict[str, Any] = {}
    opt = None
    log: list[dict[str, Any]] = []
    t0 = time.time()
    step = 0
    for phase, steps in spec.vision_pretrain:
        for i in range(1, steps + 1):
            step += 1
            idx = sorted(rng.randrange(len(attrs)) for _ in range(batch))
            inputs = {k: v.to(device) for k, v in fam.batch_inputs(pixels[idx], batch).items()}
            feats = fam.video_features(model, inputs)
            pooled = torch.cat([feats.mean(1), feats.amax(1)], -1)
            if opt is None:
                heads = {a: torch.nn.Linear(pooled.shape[-1], len(g.ATTRIBUTES[a])).to(device) for a in names}
                opt = torch.optim.AdamW(vision + [p for h in heads.values() for p in h.parameters()],
                                        lr=3 * spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
            logits = {a: heads[a](pooled) for a in phase}
            loss = sum(F.cross_entropy(logits[a], labels[a][idx]) for a in phase)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vision, 1.0)
            opt.step()
            if step % 50 == 0 or i == steps:
                acc = {a: round(float((logits[a].argmax(-1) == labels[a][idx]).float().mean()), 3) for a in phase}
                log.append({"step": step, "attributes": list(phase), "loss": round(loss.item(), 4),
                            "batch_accuracy": acc, "minutes": round((time.time() - t0) / 60, 2)})
                print(f"[{role}] vision pre-training step {step} loss {loss.item():.3f} batch accuracy "
                      + " ".join(f"{a[:3]} {v:.2f}" for a, v in acc.items()), flush=True)
    return log
