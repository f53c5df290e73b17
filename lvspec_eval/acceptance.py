"""Acceptance rules: one small strategy object per decoding method.

The terms (round, exact, loose, shift, rejected, correction, bonus) and the provenance codes they
give emitted tokens are defined once in `lvspec_eval.glossary`. Verdicts after the first rejection
are ignored. A rule sees pure tensors (`RoundView`) and returns one verdict per draft position;
`accepted_length` (the one shared prefix helper) turns verdicts into the accepted count.
A method's rule is built from the model args in one place: `lvspec_eval.engine.methods.build_method`.

EOS and other special tokens are always strict, under every rule: a position where the draft
token or the target's token is special (`RoundView.special_ids`) is accepted only exactly, so no
rule accepts a drafted EOS loosely and none overrides the target's EOS with a filler.
`judge_round` applies this one guard (`strict_on_special`) to any rule's verdicts; the engine
calls it, not `rule.judge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from lvspec_eval.config import FLY_ENTROPY_NORMS, FLY_WINDOW_RULES

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


#: AMD-AGI/FLy turns the entropy gate off for thresholds at or below this value.
FLY_GATE_OFF_AT = 1e-2


def top_k_entropy(logits: torch.Tensor, k: int = 3, renormalise: bool = False) -> torch.Tensor:
    """[P] entropy in nats, -sum p log p over the k most likely tokens of each row of logits [P, V].

    renormalise=False (FLy's code): p are the probabilities of the full-vocabulary softmax, so the k
    terms need not sum to 1 (a flat row over many tokens scores LOW: 100 equal tokens give
    3 * 0.01 * ln 100 = 0.138). renormalise=True: p is the softmax over the k logits alone (ln k at
    most; the same flat row scores ln 3 = 1.099). Zero probabilities contribute 0."""
    logits = logits.float()
    k = min(int(k), logits.shape[-1])
    if logits.device.type == "cpu" and k <= 8:  # numpy's reductions: ~3x faster than torch's on one CPU thread
        top, lse = _top_k_and_logsumexp(logits.numpy(), k)
        top, lse = torch.from_numpy(top), torch.from_numpy(lse)
    else:
        top = logits.topk(k, dim=-1).values  # [P, k]
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # [P, 1]
    if renormalise:
        logp = torch.log_softmax(top, dim=-1)
    else:
        logp = top - lse  # log of the full softmax, top-k entries
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def _top_k_and_logsumexp(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[P, V] float32 -> (the k largest values of each row [P, k], descending; logsumexp [P, 1]).

    One scratch buffer: exp(a - max) is summed for the logsumexp, then serves the k argmax passes
    (exp is monotonic; picked entries are set to -1; values are read from `a`), so `a` is never copied
    (for small k, faster than a partition or a sort). Two logits whose exps round to one float are taken
    in index order: the same top-k set unless they tie for the k-th place, where either gives the entropy
    to float rounding."""
    m = a.max(-1, keepdims=True)
    e = np.subtract(a, m)
    np.exp(e, out=e)
    lse = m + np.log(e.sum(-1, keepdims=True))  # numpy sums pairwise
    rows = np.arange(a.shape[0])
    top = np.empty((a.shape[0], k), dtype=np.float32)
    for j in range(k):
        i = e.argmax(-1)
        top[:, j] = a[rows, i]
        e[rows, i] = -1.0
    return top, lse


def fly_window_ok(exact: torch.Tensor, window: int, rule: str = "amd") -> torch.Tensor:
    """[K] bool: position i passes FLy's window test (its own match is not looked at).

    Both rules need the W-1 draft tokens after i to be EXACT matches (a second mismatch inside the
    window fails it, even one that FLy could accept). `amd` also needs i <= K - W - 1: AMD-AGI/FLy
    slides a window [mismatch, W-1 exact] over the block, then reverts every position among the
    block's last W, so a mismatch there is rejected even when W-1 exact tokens follow it (with
    K <= W nothing is accepted loosely). `in_block` only needs the W-1 tokens inside the block
    (i <= K - W). vLLM's FLy (`fly_window_size` = w following tokens, pos + w < K) equals
    `in_block` with W = w + 1."""
    if rule not in FLY_WINDOW_RULES:
        raise ValueError(f"fly window rule {rule!r}: choose one of {', '.join(FLY_WINDOW_RULES)}")
    k, need = exact.numel(), int(window) - 1
    last = k - int(window) - (1 if rule == "amd" else 0)  # last position whose window counts
    ok = torch.zeros(k, dtype=torch.bool, device=exact.device)
    if last < 0:
        return ok
    if need == 0:
        ok[: last + 1] = True
    else:
        runs = exact.to(torch.int32).unfold(0, need, 1).sum(-1) == need  # [K-need+1] exact[j..j+need-1]
        ok[: last + 1] = runs[1 : last + 2]  # the window of i starts at i+1
    return ok


class FlyPlusRule(AcceptanceRule):
    """FLy+ : a mismatch is accepted when the target is unsure there: top-k entropy >= threshold.

    This is FLy without its window, i.e. the `abla_no_window` ablation of AMD-AGI/FLy
    (fly/models/FLy.py, `SPDGenerate.generate_chunks` with `abla_no_window`; commit
    6667ae8477d087732eb71d7bdaa0d1cb94462a60). The entropy is FLy's `calculate_topk_entropy`
    (`top_k_entropy`, k = 3, full softmax, nats), the gate is `rej_by_entropy`: a mismatch is
    rejected where the entropy is < threshold; a threshold <= 0.01 turns the gate off (their
    `entropy_thre if entropy_thre > 1e-2 else None`), so every mismatch passes it.
    entropy_norm="top_k" (this project's earlier variant) renormalises over the top-k instead."""

    name = "fly_plus"

    def __init__(self, entropy_threshold: float = 0.3, entropy_top_k: int = 3, entropy_norm: str = "full"):
        if entropy_norm not in FLY_ENTROPY_NORMS:
            raise ValueError(f"fly entropy_norm {entropy_norm!r}: choose one of {', '.join(FLY_ENTROPY_NORMS)}")
        if int(entropy_top_k) < 1:
            raise ValueError(f"fly entropy_top_k={entropy_top_k}: it must be >= 1")
        self.entropy_threshold = float(entropy_threshold)
        self.entropy_top_k = int(entropy_top_k)
        self.entropy_norm = entropy_norm

    def _loosen(self, view: RoundView, verdicts: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Mark LOOSE the candidate positions [K] bool where the target is unsure. The entropy (a top-k
        and a logsumexp over the vocabulary per row: the rule's main cost) is computed row by row, in
        order, and only up to the round's first rejection: verdicts after it are ignored."""
        rows = candidates.nonzero().view(-1)
        if not rows.numel():
            return verdicts
        if self.entropy_threshold <= FLY_GATE_OFF_AT:  # gate off, as in FLy's code
            verdicts[rows] = LOOSE
            return verdicts
        outside = ((verdicts == REJECT) & ~candidates).nonzero()  # mismatches no window admits: rejected
        stop = int(outside[0, 0]) if outside.numel() else int(verdicts.numel())
        for row in rows.tolist():
            if row > stop:
                break
            entropy = top_k_entropy(view.target_logits[row:row + 1], self.entropy_top_k,
                                    renormalise=self.entropy_norm == "top_k")  # [1]
            if float(entropy) < self.entropy_threshold:
                break  # rejected: the accepted prefix ends here
            verdicts[row] = LOOSE
        return verdicts

    def judge(self, view: RoundView) -> torch.Tensor:
        exact = view.exact
        return self._loosen(view, exact.to(torch.int8), ~exact)


class FlyRule(FlyPlusRule):
    """FLy (Li et al., arXiv 2511.22972) as AMD-AGI/FLy's code computes it (fly/models/FLy.py,
    `SPDGenerate.generate_chunks`, non-tree path, with `rej_by_entropy` and `calculate_topk_entropy`;
    commit 6667ae8477d087732eb71d7bdaa0d1cb94462a60; defaults from fly_config/FLy_Llama3_70b.json:
    win_len 6, entropy_thre 0.3): a mismatch at i is accepted when

    - the W-1 draft tokens after it are exact matches and, with `window_rule="amd"`, i is not among
      the block's last W positions (`fly_window_ok`), and
    - the target is unsure at i: the top-k entropy of its logits there (k = 3, probabilities of
      the full softmax, not renormalised, nats) is >= the threshold (off at <= 0.01).

    Nothing is deferred to a later round: a mismatch whose window does not fit is rejected.
    Options (this project's earlier variant, not the default): `window_rule="in_block"`,
    `entropy_norm="top_k"`."""

    name = "fly"

    def __init__(self, window: int = 6, entropy_threshold: float = 0.3, entropy_top_k: int = 3,
                 entropy_norm: str = "full", window_rule: str = "amd"):
        super().__init__(entropy_threshold, entropy_top_k, entropy_norm)
        if window_rule not in FLY_WINDOW_RULES:
            raise ValueError(f"fly window_rule {window_rule!r}: choose one of {', '.join(FLY_WINDOW_RULES)}")
        if int(window) < 1:
            raise ValueError(f"fly window={window}: it must be >= 1")
        self.window = int(window)
        self.window_rule = window_rule

    def judge(self, view: RoundView) -> torch.Tensor:
        exact = view.exact
        candidates = ~exact & fly_window_ok(exact, self.window, self.window_rule)
        return self._loosen(view, exact.to(torch.int8), candidates)


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
