"""Methods are built once: from `LVSpecArgs`, everything one decode of a method needs.

`build_method(args)` is the only place that turns model args into an acceptance rule, an anchor
spec (whose `finder` makes the per-sample AnchorFinder from the target's prefill), the SpecVLM
pruning of the drafter's video, the hidden-state capture layer, the video-attention probe
layer and the draft schedule (when the drafter starts). The lmms-eval backends, the testbed sweep, the benchmarks and the tests all decode through
`Method.decode`; a setting travels one way, args -> `build_method` -> rule/finder/pruning.
Never imports lmms-eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from lvspec_eval.acceptance import AcceptanceRule, FlyPlusRule, FlyRule, LVSpecRule, RandomRule, StrictRule
from lvspec_eval.adapters.base import HFAdapter
from lvspec_eval.config import DecodeConfig, LVSpecArgs
from lvspec_eval.engine.loop import DecodeResult, decode
from lvspec_eval.engine.schedule import AutoSchedule, DraftSchedule, FixedSchedule
from lvspec_eval.pruning import ALL_LAYERS, VideoPruning
from lvspec_eval.relevance import AnchorRule, AnchorSide, AnchorSpec, RelevanceRepr


@dataclass(frozen=True, eq=False)
class Method:
    """One decoding method under one setting: what `engine.loop.decode` needs besides the models.

    Two Methods are equal when they come from equal args and hold the same parts."""

    args: LVSpecArgs  # the settings it was built from (recorded as `params` via args.rule_params())
    rule: Optional[AcceptanceRule]  # None: `ar`, which drafts nothing
    pruning: Optional[VideoPruning]  # None: the drafter sees the whole video
    anchors: Optional[AnchorSpec]  # None: the rule needs no anchors
    capture_layer: Optional[int]  # target decoder layer whose hidden states the finder reads (relevance_repr=hidden)
    probe_layer: Optional[int]  # target decoder layer of the video-attention probe (relevance_repr=attention)
    schedule: Optional[DraftSchedule] = None  # when the drafter starts (None: `ar`, which drafts nothing)

    @property
    def name(self) -> str:
        return self.args.method

    @property
    def drafts(self) -> bool:
        return self.rule is not None

    def _parts(self) -> tuple:
        rule = None if self.rule is None else (type(self.rule), sorted(vars(self.rule).items()))
        return (self.args, rule, self.pruning, self.anchors, self.capture_layer, self.probe_layer, self.schedule)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Method) and self._parts() == other._parts()

    def __hash__(self) -> int:
        return hash(self.args)

    def decode(self, target: HFAdapter, draft: Optional[HFAdapter], inputs: dict[str, Any], cfg: DecodeConfig, *,
               seed: int, detokenize: Optional[Callable[[list[int]], str]] = None,
               profile: bool = False) -> DecodeResult:
        """One greedy decode of `inputs` by this method (`draft` is ignored by `ar`); `seed` seeds the
        per-sample RNG of the `random` control; `detokenize` (needed with `cfg.until`) and `profile` as in
        `engine.loop.decode`."""
        return decode(
            target, inputs, cfg,
            draft=draft if self.drafts else None,
            pruning=self.pruning,
            rule=self.rule,
            schedule=self.schedule,
            anchor_factory=self.anchors.finder if self.anchors is not None else None,
            capture_layer=self.capture_layer,
            video_attention_layer=self.probe_layer,
            generator=torch.Generator().manual_seed(seed),
            detokenize=detokenize,
            profile=profile,
        )


def _rule(args: LVSpecArgs) -> Optional[AcceptanceRule]:
    """The acceptance rule of `args.method` (None for `ar`, which drafts nothing)."""
    method = args.method
    if method == "ar":
        return None
    if method in ("sd", "specvlm"):
        return StrictRule()
    if method == "lvspec":
        return LVSpecRule(shift_window=args.shift_window)
    fly_entropy = dict(entropy_threshold=args.fly_entropy, entropy_top_k=args.fly_entropy_top_k,
                       entropy_norm=args.fly_entropy_norm)
    if method == "fly":
        return FlyRule(window=args.fly_window, window_rule=args.fly_window_rule, **fly_entropy)
    if method == "fly_plus":
        return FlyPlusRule(**fly_entropy)
    if method == "random":
        return RandomRule(p=args.random_accept)
    raise ValueError(f"unknown method {method!r}")


def _schedule(args: LVSpecArgs) -> Optional[DraftSchedule]:
    """When the drafter of `args.method` starts (None for `ar`)."""
    if args.method == "ar":
        return None
    if args.draft_schedule == "fixed":
        return FixedSchedule()
    return AutoSchedule(short_answer_tokens=args.short_answer_tokens)


def build_method(args: LVSpecArgs) -> Method:
    """Everything one decode of `args.method` needs, from `args` alone."""
    rule = _rule(args)
    keep = args.video_keep()  # 1.0 for `ar` and for unpruned drafting
    layer = ALL_LAYERS if args.draft_video_layer is None else args.draft_video_layer
    pruning = (VideoPruning(keep=keep, mass=args.draft_video_mass, layer=layer, fill=args.draft_video_fill)
               if keep < 1.0 else None)
    anchors = None
    if rule is not None and rule.needs_anchors:
        anchors = AnchorSpec(rule=AnchorRule(args.anchor_rule), relax_ratio=args.relax_ratio,
                             side=AnchorSide(args.anchor_side), repr_kind=RelevanceRepr(args.relevance_repr),
                             top_n=args.top_n)
    signal = anchors.verify_signal if anchors is not None else None  # relevance signals only where a finder reads them
    return Method(args=args, rule=rule, pruning=pruning, anchors=anchors,
                  capture_layer=args.relevance_layer if signal is RelevanceRepr.HIDDEN else None,
                  probe_layer=args.relevance_layer if signal is RelevanceRepr.ATTENTION else None,
                  schedule=_schedule(args))
