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
  0.01-0.42 (reports/testbed.md, section 5). Needs no visual representation, so it also applies
  to a sample without video.
lambda = 0 makes every mismatching position an anchor under every rule (LVSpec then reduces to SD).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from lvspec_eval.acceptance import rank_anchor_count


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

    def __init__(self, rule: str, relax_ratio: float, side: str, history: Optional[torch.Tensor] = None):
        self.rule = rule
        self.relax_ratio = float(relax_ratio)
        self.side = side
        self._history: list[torch.Tensor] = [] if history is None else [history.float().cpu()]

    def position_scores(self, s_draft: torch.Tensor, s_target: torch.Tensor) -> torch.Tensor:  # [K]
        if self.side == "draft":
            return s_draft
        if self.side == "target":
            return s_target
        return torch.maximum(s_draft, s_target)

    def select(self, scores: torch.Tensor) -> torch.Tensor:  # [K] -> [K] bool
        k = scores.numel()
        anchors = torch.zeros(k, dtype=torch.bool)
        if k == 0:
            return anchors
        if self.rule == "rank":
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
        repr_kind: str,
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
        relevance layer (repr_kind == "hidden"), or [K+1] the verify queries' attention share on
        the video tokens (repr_kind == "attention": no visual features; a video-free sample has
        zero share everywhere); target_logits: [K+1, V] (needed by ``anchor_rule=target_prob``)."""
        k = draft_ids.numel()
        if self.selector.rule == "target_prob":
            if target_logits is None:
                raise RuntimeError("anchor_rule=target_prob needs the verify forward's target logits")
            return self.selector.select_by_target_prob(draft_ids, target_ids, target_logits)
        if self.repr_kind == "attention":
            if hidden is None:  # no video in the prompt: every position is an anchor (strict)
                return torch.ones(k, dtype=torch.bool), torch.zeros(k)
            s_draft = s_target = hidden[:k].float()  # query j judges draft j+1 (0-based: draft j)
            scores = self.selector.position_scores(s_draft, s_target).cpu()
            return self.selector.select(scores), scores
        if self.scorer is None:
            return torch.ones(k, dtype=torch.bool), torch.zeros(k)
        if self.repr_kind == "hidden":
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


def build_anchor_finder(
    *,
    visual: Optional[torch.Tensor],
    prompt_reps: Optional[torch.Tensor],
    top_n: int,
    rule: str,
    relax_ratio: float,
    side: str,
    repr_kind: str,
    embed: Callable[[torch.Tensor], torch.Tensor],
) -> AnchorFinder:
    """visual: [Nv, H] visual representations; prompt_reps: [P, H] prompt text representations
    (seed the quantile history)."""
    if visual is None or visual.shape[0] == 0 or repr_kind == "attention" or rule == "target_prob":
        return AnchorFinder(None, AnchorSelector(rule, relax_ratio, side), repr_kind, embed)
    scorer = RelevanceScorer(visual, top_n)
    history = scorer.score(prompt_reps) if prompt_reps is not None and prompt_reps.shape[0] else None
    return AnchorFinder(scorer, AnchorSelector(rule, relax_ratio, side, history), repr_kind, embed)
