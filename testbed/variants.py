"""The named decoding variants of the testbed's reports: the paper's methods and this project's opt-in
improvements, each a method plus the model args that make it (docs/testbed.md, "Variants").

`make demo`, the settings sweep and `reports/testbed.md` name their rows from here, and pair every
loose variant with the lossless variant of the same drafter input (`LVSpecArgs.lossless_counterpart`):
`lvspec` and `random` (drafter on the SpecVLM-pruned video) with `specvlm`; `fly`, `fly_plus` and
`lvspec+full_video` (whole video) with `sd`; a Self-SD variant (`NAME@self`) with `sd@self`.

A variant's model args are fixed here, not tuned toward a number: the project's variants use the
paper's lambda (0.7) and change one component each; `python -m testbed.sweep --select` says, on the
validation clips, which setting of each family wins (and whether it is the one registered here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from lvspec_eval.config import LVSpecArgs

#: Where a variant comes from (the README's per-component table says it for each part of lvspec).
ORIGINS = {
    "reference": "the reference (plain greedy) or strict speculative decoding",
    "paper": "the LVSpec paper as this project reads it (its method, its SpecVLM drafter input, its control; docs/method_choices.md)",
    "baseline": "another paper's method as its authors' code computes it (SpecVLM, FLy: docs/baselines.md)",
    "project": "this project's opt-in change to one component of lvspec (docs/method_choices.md)",
}


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    model_args: tuple[tuple[str, Any], ...]  # beyond the defaults of LVSpecArgs
    origin: str  # a key of ORIGINS
    about: str

    @property
    def args_text(self) -> str:
        """The variant's model args as `--model_args` text (without the method)."""
        return ",".join(f"{k}={v}" for k, v in self.model_args)

    def args(self, *, draft: str = "drafter", extra: Optional[dict[str, Any]] = None) -> LVSpecArgs:
        """Its LVSpecArgs (target and drafter names are placeholders unless given)."""
        clash = sorted(set(dict(self.model_args)) & set(extra or {}))
        if clash:
            raise ValueError(f"variant {self.name!r} sets {', '.join(clash)} itself; leave {'it' if len(clash) == 1 else 'them'} "
                             "out of the extra model args (or run another variant)")
        return LVSpecArgs.from_kwargs(pretrained="target", draft_pretrained=draft, method=self.method,
                                      **dict(self.model_args), **(extra or {}))


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("ar", "ar", (), "reference", "plain greedy decoding of the target"),
    Variant("sd", "sd", (), "reference", "strict speculative decoding, the drafter sees the whole video"),
    Variant("specvlm", "specvlm", (), "baseline",
            "strict speculative decoding, the drafter prefills on the SpecVLM-pruned video (10% of the video tokens)"),
    Variant("lvspec", "lvspec", (), "paper",
            "the paper's LVSpec: top-N cosine of the input embedding against the projected visual features (N 10), "
            "rank rule at lambda 0.7, PST w 2, drafter on the SpecVLM-pruned video"),
    Variant("lvspec+attention", "lvspec", (("relevance_repr", "attention"),), "project",
            "lvspec with this project's relevance: the target's attention share on the video in each verify forward"),
    Variant("lvspec+target_prob", "lvspec", (("anchor_rule", "target_prob"),), "project",
            "lvspec with this project's anchor rule: a position is a filler only if the target gives the draft token "
            ">= (1 - lambda) of its own token's probability"),
    Variant("lvspec+full_video", "lvspec", (("draft_video_keep", 1.0),), "project",
            "lvspec with the drafter on the whole video (this project's earlier drafter input)"),
    Variant("fly", "fly", (), "baseline", "FLy as AMD-AGI/FLy's code: entropy gate and window rule"),
    Variant("fly_plus", "fly_plus", (), "baseline", "FLy's no-window ablation (entropy gate alone)"),
    Variant("random", "random", (), "paper",
            "the paper's control of LVSpec: accept a mismatch with p 0.75, same drafter input as lvspec"),
)}

SELF = "@self"


def parse(spec: str) -> tuple[Variant, bool]:
    """(variant, self-drafting) of `NAME` or `NAME@self` (Self-SD: the target drafts for itself)."""
    name, at, drafter = spec.partition("@")
    if at and drafter != "self":
        raise SystemExit(f"unknown drafter in {spec!r}: write NAME or NAME@self (Self-SD)")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; the testbed's variants are: {', '.join(VARIANTS)} "
                         "(testbed/variants.py), each optionally NAME@self")
    return VARIANTS[name], bool(at)


def spec_of(variant: Variant, self_draft: bool) -> str:
    return variant.name + (SELF if self_draft else "")


def label(spec: str) -> str:
    """A row label: the variant name, Self-SD spelled out."""
    return spec.replace(SELF, " (Self-SD)")


def find(method: str, params: dict[str, Any], *, self_draft: bool = False,
         extra: Optional[dict[str, Any]] = None) -> Optional[str]:
    """The spec (NAME or NAME@self) of the registered variant whose rule_params under `extra` equal `params`
    for `method`, or None (a setting the registry does not name)."""
    draft = "self" if self_draft else "drafter"
    for variant in VARIANTS.values():
        if variant.method == method and variant.args(draft=draft, extra=extra).rule_params() == params:
            return spec_of(variant, self_draft)
    return None


def counterpart(spec: str, extra: Optional[dict[str, Any]] = None) -> Optional[str]:
    """The lossless variant of the same drafter input that a loose variant pairs with (None for ar, sd,
    specvlm); raises when the registry has no variant for it (the registry must stay complete)."""
    variant, self_draft = parse(spec)
    other = variant.args(draft="self" if self_draft else "drafter", extra=extra).lossless_counterpart()
    if other is None:
        return None
    found = find(other.method, other.rule_params(), self_draft=self_draft, extra=extra)
    if found is None:
        raise ValueError(f"no registered variant is the lossless counterpart of {spec} ({other.method} with "
                         f"{other.rule_params()}): add one to testbed/variants.py")
    return found


def with_counterparts(specs: list[str], extra: Optional[dict[str, Any]] = None) -> list[str]:
    """`specs` with `ar` first and every loose variant's lossless counterpart added (after the last
    spec), each once, in order."""
    out = ["ar"] + [s for s in specs if s != "ar"]
    for spec in list(out):
        other = counterpart(spec, extra)
        if other is not None and other not in out:
            out.append(other)
    return out
