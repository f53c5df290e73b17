"""Visual relevance: which draft positions are *visual anchors* (LVSpec, method.md section 3).

Score of a text token x:  A(x) = mean of the top-N cosine similarities between a representation
of x and the representations of the visual tokens of the sample (top-N so that background
patches do not dilute the score).

Representations (`relevance_repr`):
- ``embedding`` (default): the target's input embedding of x versus the projected visual
  features the target inserted at prefill (computed once per sample).
- ``hidden``: the target's hidden state at decoder layer `relevance_layer`, for the visual
  positions at prefill and, per round, for the draft position (d_i is an input of the verify
  forward at index i) and for the position that predicted t_i (input index i - 1).

Anchor selection (`anchor_rule`) from per-position scores, where a position's score is
A(d_i), A(t_i) or their max (`anchor_side` = draft | target | both):
- ``rank``: per round, the ceil((1 - lambda) * K) highest-scoring positions are anchors;
- ``quantile``: a position is an anchor if its score is >= the lambda-quantile of the scores seen
  so far in the sample (prompt text tokens plus every committed token).
- ``target_prob`` (this project's, not the paper's): no relevance score; a position is an anchor
  unless the target gives the draft token at least (1 - lambda) of the probability of its own
  greedy token there: p_T(d_i) >= (1 - lambda) * p_T(t_i) makes it a filler. The target, having
  seen the video, is confident on the words the video decides and spread over paraphrases
  elsewhere; on the testbed the cosine and attention scores find anchors with precision
  0.01-0.42 (reports/testbed.md, appendix). Needs no visual representation, so it also applies
  to a sample without video.
lambda = 0 makes every mismatching position an anchor under every rule (LVSpec then reduces to SD).

A method's `AnchorSpec` (built from the model args by `lvspec_eval.engine.methods.build_method`)
makes the per-sample `AnchorFinder` from the target's prefill.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from lvspec_eval.adapters.base import Prefill, Session


class AnchorRule(enum.Enum):
    """`anchor_rule`: how anchors are selected from position scores (or from the target's logits)."""

    RANK = "rank"
    QUANTILE = "quantile"
    TARGET_PROB = "target_prob"


class RelevanceRepr(enum.Enum):
    """`relevance_repr`: the representation a relevance score is computed from."""

    EMBEDDING = "embedding"
    HIDDEN = "hidden"
    ATTENTION = "attention"


class AnchorSide(enum.Enum):
    """`anchor_side`: whose score judges a position, the draft token's, the target token's, or both."""

    BOTH = "both"
    DRAFT = "draft"
    TARGET = "target"

    def combine(self, s_draft: torch.Tensor, s_target: torch.Tensor) -> torch.Tensor:  # [K], [K] -> [K]
        if self is AnchorSide.DRAFT:
            return s_draft
        if self is AnchorSide.TARGET:
            return s_target
        return torch.maximum(s_draft, s_target)  # both: an anchor if either token is


def rank_anchor_count(relax_ratio: float, k: int) -> int:
    """Anchors per round under `anchor_rule=rank`: ceil((1 - lambda) * K)."""
    return min(k, math.ceil(round((1.0 - relax_ratio) * k, 9)))


class RelevanceScorer:
    """A(x) for representations of text tokens, against a fixed set of visual representations."""

    def __init__(self, visual: torch.Tensor, top_n: int):  # visual: [Nv, H]
        self.visual = F.normalize(visual.float(), dim=-1)  # [Nv, H]
        self.top_n = max(1, min(int(top_n), self.visual.shape[0]))

    def score(self, reps: torch.Tensor) -> torch.Tensor:  # reps: [P, H] -> [P]
        reps = F.normalize(reps.float().to(self.visual.device), dim=-1)
        sims = reps @ self.visual.T  # [P, Nv]
        return sims.topk(self.top_n, dim=-1).values.mean(-1)


class AnchorSelector:
    """Turns per-position scores into anchor flags under `rank` or `quantile`."""

    def __init__(self, rule: AnchorRule, relax_ratio: float, side: AnchorSide, history: Optional[torch.Tensor] = None):
        self.rule = rule
        self.relax_ratio = float(relax_ratio)
        self.side = side
        self._history: list[torch.Tensor] = [] if history is None else [history.float().cpu()]

    def position_scores(self, s_draft: torch.Tensor, s_target: torch.Tensor) -> torch.Tensor:  # [K]
        return self.side.combine(s_draft, s_target)

    def select(self, scores: torch.Tensor) -> torch.Tensor:  # [K] -> [K] bool
        k = scores.numel()
        anchors = torch.zeros(k, dtype=torch.bool)
        if k == 0:
            return anchors
        if self.rule is AnchorRule.RANK:
            n = rank_anchor_count(self.relax_ratio, k)
            if n > 0:
                anchors[scores.cpu().topk(n).indices] = True
            return anchors
        if self.relax_ratio <= 0.0 or not self._history:
            anchors[:] = True
            return anchors
        threshold = torch.quantile(torch.cat(self._history), self.relax_ratio)
        return scores.cpu() >= threshold

    def select_by_target_prob(self, draft_ids: torch.Tensor, target_ids: torch.Tensor,
                              target_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`target_prob`: anchors [K] where p_T(d_i) < (1 - lambda) * p_T(t_i), and the scores
        [K] = log p_T(t_i) - log p_T(d_i) (>= 0; 0 where the draft is the target's own token)."""
        k = draft_ids.numel()
        rows = target_logits[:k].float()
        idx = torch.arange(k, device=rows.device)
        margin = (rows[idx, target_ids[:k].to(rows.device)] - rows[idx, draft_ids.to(rows.device)]).cpu()
        if self.relax_ratio >= 1.0:
            return torch.zeros(k, dtype=torch.bool), margin
        # p(d)/p(t) = exp(-margin) >= 1 - lambda  <=>  margin <= -log(1 - lambda); lambda = 0: only ties
        return margin > -math.log1p(-self.relax_ratio), margin

    def observe(self, scores: torch.Tensor) -> None:
        """Add the scores of committed tokens to the sample's history (used by `quantile`)."""
        if scores.numel():
            self._history.append(scores.detach().float().cpu())


class AnchorFinder:
    """Per-sample anchor detection for the engine: scores draft/target tokens and flags anchors."""

    def __init__(
        self,
        scorer: Optional[RelevanceScorer],
        selector: AnchorSelector,
        repr_kind: RelevanceRepr,
        embed: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.scorer = scorer  # None when the sample has no visual tokens: every position is an anchor
        self.selector = selector
        self.repr_kind = repr_kind
        self.embed = embed

    def round(
        self, draft_ids: torch.Tensor, target_ids: torch.Tensor, hidden: Optional[torch.Tensor],
        target_logits: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchors [K] bool and position scores [K] for one round.

        draft_ids: [K]; target_ids: [K+1]; hidden: [K+1, H] verify-forward hidden states at the
        relevance layer (repr_kind HIDDEN), or [K+1] the verify queries' attention share on
        the video tokens (repr_kind ATTENTION: no visual features; a video-free sample has
        zero share everywhere); target_logits: [K+1, V] (needed by ``anchor_rule=target_prob``)."""
        k = draft_ids.numel()
        if self.selector.rule is AnchorRule.TARGET_PROB:
            if target_logits is None:
                raise RuntimeError("anchor_rule=target_prob needs the verify forward's target logits")
            return self.selector.select_by_target_prob(draft_ids, target_ids, target_logits)
        if self.repr_kind is RelevanceRepr.ATTENTION:
            if hidden is None:  # no video in the prompt: every position is an anchor (strict)
                return torch.ones(k, dtype=torch.bool), torch.zeros(k)
            s_draft = s_target = hidden[:k].float()  # query j judges draft j+1 (0-based: draft j)
            scores = self.selector.position_scores(s_draft, s_target).cpu()
            return self.selector.select(scores), scores
        if self.scorer is None:
            return torch.ones(k, dtype=torch.bool), torch.zeros(k)
        if self.repr_kind is RelevanceRepr.HIDDEN:
            if hidden is None:
                raise RuntimeError("relevance_repr=hidden needs the verify hidden states")
            s_draft = self.scorer.score(hidden[1 : k + 1])
            s_target = self.scorer.score(hidden[:k])
        else:
            both = self.scorer.score(self.embed(torch.cat([draft_ids, target_ids[:k]])))
            s_draft, s_target = both[:k], both[k:]
        scores = self.selector.position_scores(s_draft, s_target).cpu()
        return self.selector.select(scores), scores

    def commit(self, scores: torch.Tensor) -> None:
        self.selector.observe(scores)


@dataclass(frozen=True)
class AnchorSpec:
    """How a method finds anchors (built from the model args by `lvspec_eval.engine.methods`);
    `finder` makes the per-sample `AnchorFinder` from the target's prefill and session."""

    rule: AnchorRule
    relax_ratio: float  # lambda
    side: AnchorSide
    repr_kind: RelevanceRepr
    top_n: int

    @property
    def verify_signal(self) -> Optional[RelevanceRepr]:
        """What the finder reads from each verify forward: HIDDEN (hidden states at the relevance
        layer), ATTENTION (the video-attention probe), or None (embeddings, or the verify logits)."""
        if self.rule is AnchorRule.TARGET_PROB or self.repr_kind is RelevanceRepr.EMBEDDING:
            return None
        return self.repr_kind

    def finder(self, prefill: "Prefill", session: "Session") -> AnchorFinder:
        """The per-sample finder: the visual and prompt representations this spec reads from the prefill."""
        if self.rule is AnchorRule.TARGET_PROB:  # reads the verify logits: no visual representation to prepare
            visual = prompt = None
        elif self.repr_kind is RelevanceRepr.HIDDEN:
            visual = prefill.hidden[~prefill.text_mask] if prefill.visual_features is not None else None
            prompt = prefill.hidden[prefill.text_mask]
        elif self.repr_kind is RelevanceRepr.ATTENTION:  # scored from the verify forwards' attention, not features
            visual = prompt = None
        else:
            visual = prefill.visual_features
            prompt = session.embed(prefill.prompt_ids[prefill.text_mask])
        return self.finder_over(visual, prompt, session.embed)

    def finder_over(self, visual: Optional[torch.Tensor], prompt_reps: Optional[torch.Tensor],
                    embed: Callable[[torch.Tensor], torch.Tensor]) -> AnchorFinder:
        """visual: [Nv, H] visual representations; prompt_reps: [P, H] prompt text representations
        (seed the quantile history)."""
        if (visual is None or visual.shape[0] == 0 or self.repr_kind is RelevanceRepr.ATTENTION
                or self.rule is AnchorRule.TARGET_PROB):
            return AnchorFinder(None, AnchorSelector(self.rule, self.relax_ratio, self.side), self.repr_kind, embed)
        scorer = RelevanceScorer(visual, self.top_n)
        history = scorer.score(prompt_reps) if prompt_reps is not None and prompt_reps.shape[0] else None
        return AnchorFinder(scorer, AnchorSelector(self.rule, self.relax_ratio, self.side, history), self.repr_kind,
                            embed)
