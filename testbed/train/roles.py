"""The testbed's training roles: architecture, learning rate, caption style, the validation bar that
stops training, the time budget and the seed of each; and the pairs trained side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RoleSpec:
    hidden: int
    layers: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    lr: float
    style: str
    # validation bar that stops training
    stop_f1: float
    stop_min_attr: float
    stop_mcq: float
    max_minutes: float
    seed: int
    family: str = "qwen2_5_vl"
    # vision pre-training: phases of (attributes, steps), each training the vision tower + projector
    # alone with throw-away linear heads predicting those attributes from the pooled video features
    # (as real VLMs start from a trained vision encoder); then the warm-up: the first `warmup_steps`
    # steps of the whole model train only MCQ questions on `warmup_attribute`
    vision_pretrain: tuple[tuple[tuple[str, ...], int], ...] = ()
    # learning rate of the vision tower + projector relative to `lr` after pre-training (3x in it)
    vision_lr_scale: float = 3.0
    warmup_attribute: str | None = None
    warmup_steps: int = 0

    @classmethod
    def from_record(cls, spec: dict[str, Any]) -> "RoleSpec":
        """The spec stored in a ``testbed.json``; records written before pre-training had phases
        (``vision_pretrain_steps`` + one attribute tuple) are read as one phase."""
        spec = dict(spec)
        steps = spec.pop("vision_pretrain_steps", None)
        phases = spec.get("vision_pretrain") or ()
        if steps is not None:
            phases = ((tuple(phases), steps),) if steps else ()
        spec["vision_pretrain"] = tuple((tuple(attrs), int(n)) for attrs, n in phases)
        return cls(**spec)


ROLES: dict[str, RoleSpec] = {
    # 256 wide (the full-vocabulary output layer sets the decode cost, hence c), only 2 layers (training
    # cost on 2 CPU cores; a 96x2 model learned every attribute in minutes per testbed.md), vision 64x2
    "target": RoleSpec(hidden=256, layers=2, intermediate=512, vision_hidden=64, vision_depth=2, lr=1.5e-3,
                       style="target", stop_f1=0.97, stop_min_attr=0.92, stop_mcq=0.95, max_minutes=50, seed=1,
                       vision_pretrain=((("motion",), 150), (("motion", "count", "shape"), 300)), vision_lr_scale=1.0,
                       warmup_attribute="motion", warmup_steps=200),
    # 64x1 text / 32x1 vision: ~4x cheaper per step; stopped early (F1 >= 0.72) so it misses details
    "drafter": RoleSpec(hidden=64, layers=1, intermediate=256, vision_hidden=32, vision_depth=1, lr=3e-3,
                        style="drafter", stop_f1=0.72, stop_min_attr=0.0, stop_mcq=0.0, max_minutes=60, seed=2),
    # The LLaVA-OneVision pair (issue: a second family beside the Qwen one; no quality bars of its own):
    # same widths, shorter budgets (no quality bars). Its target's tower is pre-trained on shape and count
    # (trained through the language model alone, after 45 min it saw shape no better than its drafter);
    # SigLIP sees single frames, so motion is left to the language model.
    "llava_target": RoleSpec(hidden=256, layers=2, intermediate=512, vision_hidden=64, vision_depth=2, lr=1.5e-3,
                             style="target", stop_f1=0.95, stop_min_attr=0.85, stop_mcq=0.90, max_minutes=30, seed=3,
                             family="llava_onevision", vision_pretrain=((("shape", "count"), 300),)),
    "llava_drafter": RoleSpec(hidden=64, layers=1, intermediate=256, vision_hidden=32, vision_depth=1, lr=3e-3,
                              style="drafter", stop_f1=0.72, stop_min_attr=0.0, stop_mcq=0.0, max_minutes=20, seed=4,
                              family="llava_onevision"),
    # The Qwen3-VL pair (issue 15): the Qwen2.5-VL pair's widths, bars, budgets and vision pre-training
    # (patch 16: the objects still move more than one patch per frame); the target's tower gets a DeepStack
    # merger after its first block, the drafter's single block feeds both the merger and DeepStack.
    "qwen3_target": RoleSpec(hidden=256, layers=2, intermediate=512, vision_hidden=64, vision_depth=2, lr=1.5e-3,
                             style="target", stop_f1=0.97, stop_min_attr=0.92, stop_mcq=0.95, max_minutes=50, seed=5,
                             family="qwen3_vl", vision_pretrain=((("motion",), 150), (("motion", "count", "shape"), 300)),
                             vision_lr_scale=1.0, warmup_attribute="motion", warmup_steps=200),
    "qwen3_drafter": RoleSpec(hidden=64, layers=1, intermediate=256, vision_hidden=32, vision_depth=1, lr=3e-3,
                              style="drafter", stop_f1=0.72, stop_min_attr=0.0, stop_mcq=0.0, max_minutes=60, seed=6,
                              family="qwen3_vl"),
}
#: ``--role`` groups: trained side by side, one thread each.
PAIRS: dict[str, tuple[str, ...]] = {"all": ("target", "drafter"), "llava_ov": ("llava_target", "llava_drafter"),
                                     "qwen3_vl": ("qwen3_target", "qwen3_drafter")}
