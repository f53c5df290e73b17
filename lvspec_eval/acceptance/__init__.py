"""Acceptance rules: one small strategy object per decoding method.

Glossary (used everywhere in the project, records included)
-----------------------------------------------------------
A *round* drafts K tokens d_1..d_K and verifies them with ONE target forward over
[last, d_1..d_K], which yields the target's greedy choices t_1..t_{K+1}; t_i is the target's
token for the position of d_i and t_{K+1} is the *bonus*. Walking i = 1..K, a draft token is

- **exact**      d_i == t_i (what standard speculative decoding accepts);
- **loose**      d_i != t_i but the rule accepts it anyway (output now differs from greedy);
- **shift**      d_i != t_i, d_i is a visual anchor, and d_i == t_j for some 0 < |j - i| <= w
                 (position-shift tolerance salvaged it);
- **rejected**   none of the above: the walk stops and t_i is emitted as the *correction*.

If all K are accepted the bonus t_{K+1} is emitted. Verdicts after the first rejection are
ignored. A rule sees pure tensors (`RoundView`) and returns one verdict per draft position;
`accepted_length` (the one shared prefix helper) turns verdicts into the accepted count.

EOS and other special tokens are always strict, under every rule: a position where the draft
token or the target's token is special (`RoundView.special_ids`) is accepted only exactly, so no
rule accepts a drafted EOS loosely and none overrides the target's EOS with a filler.
`judge_round` applies this one guard (`strict_on_special`) to any rule's verdicts; the engine
calls it, not `rule.judge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:  # pragma: no cover
    from lvspec_eval.config import LVSpecArgs

REJECT, EXACT, LOOSE, SHIFT = 0, 1, 2, 3
VERDICT_NAMES = {REJECT: "rejected", EXACT: "exact", LOOSE: "loose", SHIFT: "shift"}


@dataclass
class RoundView:
    """What a rule may look at in one round. K = len(draft_ids) (may be < num_draft_tokens at the end)."""

    draft_ids: torch.Tensor  # [K] long
    target_ids: torch.Tensor  # [K+1] long, greedy choices of the target (t_1..t_{K+1})
    target_logits: torch.Tensor  # [K+1, V] target logits over the vocabulary shared with the drafter
    anchors: Optional[torch.Tensor] = None  # [K] bool, True where the position is a visual anchor
    generator: Optional[torch.Generator] = None  # per-sample RNG for the `random` control
    special_ids: Optional[torch.Tensor] = None  # [S] long, ids verified strictly (EOS, the tokenizer's special tokens)

    @property
    def exact(self) -> torch.Tensor:  # [K] bool
        return self.draft_ids == self.target_ids[: self.draft_ids.numel()]


def accepted_length(verdicts: torch.Tensor) -> int:
    """Number of leading non-rejected verdicts (the accepted prefix)."""
    rejected = (verdicts == REJECT).nonzero()
    return int(rejected[0, 0]) if rejected.numel() else int(verdicts.numel())


def strict_on_special(verdicts: torch.Tensor, view: RoundView) -> torch.Tensor:
    """verdicts [K] with every non-exact verdict at a special position turned into REJECT.

    A position is special when d_i or t_i is in `view.special_ids`: a loose or shift-salvaged
    drafted EOS would end the answer where the target would not, and a loose draft token where
    the target says EOS would override the target's end of answer. Exact matches stay EXACT."""
    if view.special_ids is None or view.special_ids.numel() == 0 or verdicts.numel() == 0:
        return verdicts
    k = view.draft_ids.numel()
    special = (torch.isin(view.draft_ids, view.special_ids)
               | torch.isin(view.target_ids[:k], view.special_ids))  # [K] bool
    bad = special & (verdicts != EXACT)
    if not bool(bad.any()):
        return verdicts
    out = verdicts.clone()
    out[bad] = REJECT
    return out


def judge_round(rule: "AcceptanceRule", view: RoundView) -> torch.Tensor:
    """The verdicts [K] of `rule` for one round, special tokens strict (what the engine applies)."""
    return strict_on_special(rule.judge(view), view)


class AcceptanceRule:
    """Base class. `judge` returns verdicts [K] (int8) for a round."""

    name = "base"
    needs_anchors = False  # the engine computes RoundView.anchors only for rules that ask
    lossless = False

    def judge(self, view: RoundView) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _exact_or_reject(view: RoundView) -> torch.Tensor:
        return view.exact.to(torch.int8)  # EXACT == 1, REJECT == 0


class StrictRule(AcceptanceRule):
    """Standard greedy speculative decoding (`sd`, `specvlm`): exact matches only. Lossless."""

    name = "strict"
    lossless = True

    def judge(self, view: RoundView) -> torch.Tensor:
        return self._exact_or_reject(view)


def shift_hits(draft_ids: torch.Tensor, target_ids: torch.Tensor, window: int) -> torch.Tensor:
    """[K] bool: d_i equals some t_j with 0 < |j - i| <= window, j over t_1..t_{K+1}."""
    k = draft_ids.numel()
    hits = torch.zeros(k, dtype=torch.bool, device=draft_ids.device)
    if window <= 0 or k == 0:
        return hits
    n_t = target_ids.numel()
    for offset in range(1, window + 1):
        # j = i + offset
        if offset < n_t:
            m = min(k, n_t - offset)
            hits[:m] |= draft_ids[:m] == target_ids[offset : offset + m]
        # j = i - offset
        if offset < k:
            hits[offset:] |= draft_ids[offset:] == target_ids[: k - offset]
    return hits


class LVSpecRule(AcceptanceRule):
    """LVSpec: fillers (non-anchors) are accepted loosely; a mismatched anchor only via
    position-shift tolerance within `shift_window`. With every position an anchor (lambda = 0)
    and `shift_window = 0` this is exactly `StrictRule`."""

    name = "lvspec"
    needs_anchors = True

    def __init__(self, shift_window: int = 2):
        self.shift_window = int(shift_window)

    def judge(self, view: RoundView) -> torch.Tensor:
        exact = view.exact
        if view.anchors is None:
            raise ValueError("LVSpecRule needs RoundView.anchors")
        anchors = view.anchors
        verdicts = exact.to(torch.int8)
        loose = ~exact & ~anchors
        shift = ~exact & anchors & shift_hits(view.draft_ids, view.target_ids, self.shift_window)
        verdicts[loose] = LOOSE
        verdicts[shift] = SHIFT
        return verdicts


def top3_entropy(logits: torch.Tensor) -> torch.Tensor:
    """[P] entropy in nats of the softmax renormalised over the top-3 logits of each row of [P, V]."""
    top = logits.float().topk(min(3, logits.shape[-1]), dim=-1).values
    logp = torch.log_softmax(top, dim=-1)
    return -(logp.exp() * logp).sum(-1)


class FlyPlusRule(AcceptanceRule):
    """FLy+ : a mismatch is accepted when the target is unsure there (top-3 entropy >= threshold)."""

    name = "fly_plus"

    def __init__(self, entropy_threshold: float = 0.3):
        self.entropy_threshold = float(entropy_threshold)

    def _loosen(self, view: RoundView, verdicts: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Mark LOOSE the candidate positions [K] bool where the target is unsure (entropy computed
        only for candidates: a top-3 over the vocabulary per row is the rule's main cost)."""
        rows = candidates.nonzero().view(-1)
        if rows.numel():
            unsure = top3_entropy(view.target_logits[rows.to(view.target_logits.device)]) >= self.entropy_threshold
            verdicts[rows[unsure.cpu()]] = LOOSE
        return verdicts

    def judge(self, view: RoundView) -> torch.Tensor:
        exact = view.exact
        return self._loosen(view, exact.to(torch.int8), ~exact)


class FlyRule(FlyPlusRule):
    """FLy: a mismatch at i is accepted when the target is unsure there AND the next W-1 draft
    tokens all match the target exactly. Near the block end, where fewer than W-1 draft tokens
    follow i, the window cannot be checked and the mismatch is rejected (conservative choice)."""

    name = "fly"

    def __init__(self, window: int = 6, entropy_threshold: float = 0.3):
        super().__init__(entropy_threshold)
        self.window = int(window)

    def judge(self, view: RoundView) -> torch.Tensor:
        exact = view.exact
        k = exact.numel()
        need = self.window - 1
        # future_ok[i]: d_{i+1..i+W-1} all exact and inside the block
        future_ok = torch.zeros(k, dtype=torch.bool, device=exact.device)
        if k - need > 0:
            if need == 0:
                future_ok[:] = True
            else:
                runs = exact.to(torch.int32).unfold(0, need, 1).sum(-1) == need  # window starting at j
                # window for position i starts at i+1
                future_ok[: k - need] = runs[1 : k - need + 1]
        return self._loosen(view, exact.to(torch.int8), ~exact & future_ok)


class RandomRule(AcceptanceRule):
    """The paper's control: a mismatch is accepted with probability p, from a seeded per-sample RNG."""

    name = "random"

    def __init__(self, p: float = 0.75):
        self.p = float(p)

    def judge(self, view: RoundView) -> torch.Tensor:
        exact = view.exact
        draws = torch.rand(exact.numel(), generator=view.generator)
        verdicts = exact.to(torch.int8)
        verdicts[~exact & (draws.to(exact.device) < self.p)] = LOOSE
        return verdicts


def build_rule(args: "LVSpecArgs") -> Optional[AcceptanceRule]:
    """The acceptance rule of `args.method` (None for `ar`, which drafts nothing)."""
    method = args.method
    if method == "ar":
        return None
    if method in ("sd", "specvlm"):
        return StrictRule()
    if method == "lvspec":
        return LVSpecRule(shift_window=args.shift_window)
    if method == "fly":
        return FlyRule(window=args.fly_window, entropy_threshold=args.fly_entropy)
    if method == "fly_plus":
        return FlyPlusRule(entropy_threshold=args.fly_entropy)
    if method == "random":
        return RandomRule(p=args.random_accept)
    raise ValueError(f"unknown method {method!r}")


def rank_anchor_count(relax_ratio: float, k: int) -> int:
    """Anchors per round under `anchor_rule=rank`: ceil((1 - lambda) * K)."""
    return min(k, math.ceil(round((1.0 - relax_ratio) * k, 9)))
