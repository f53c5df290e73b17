"""SpecVLM-style pruning of the drafter's video tokens (method.md section 5). Pure tensors.

The drafter prefills on the prompt with only B = round(keep * Nv) of the Nv video tokens
(at least 1); the target always sees the whole video. The B tokens are chosen in two stages:

- **stage I (verifier-guided)**: video tokens in decreasing order of the attention they get from
  the target's prompt tokens after the video at prefill (one decoder layer, mean over heads and
  query positions), until their share of the attention mass that all video tokens get reaches
  `mass` (or the budget B is spent);
- **stage II (spatially uniform)**: the rest of the budget goes to the remaining tokens in
  ordered-dither (Bayer) order of their (row, column) inside the frame, every frame taking its
  next-ranked cell before any frame takes one more; so each frame gets an even share, spread over
  the whole frame.

Kept tokens stay in prompt order and keep their ORIGINAL positions (1D or M-RoPE): the adapters
feed them with the position ids they have in the full prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

#: Key of the target-input dict that asks an adapter's `start` to prefill on kept video tokens only.
VIDEO_KEEP_KEY = "video_keep"


def keep_budget(n_video: int, keep: float) -> int:
    """B = round(keep * Nv) (halves up), at least 1 and at most Nv."""
    if n_video <= 0:
        return 0
    return max(1, min(n_video, math.floor(keep * n_video + 0.5)))


def bayer_rank(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Ordered-dither rank of grid cells ([N] long each -> [N] long): taking cells by increasing
    rank spreads them evenly over the grid (the 2x2 matrix is [[0, 2], [3, 1]]; the first 4 cells
    of a 4x4 grid fall one in each quadrant)."""
    bits = max(1, int(max(int(rows.max()), int(cols.max()), 1)).bit_length()) if rows.numel() else 1
    diag = rows ^ cols
    rank = torch.zeros_like(rows)
    for i in range(bits):  # bit-reversed interleave of (row ^ col, row)
        rank = (rank << 1) | ((diag >> i) & 1)
        rank = (rank << 1) | ((rows >> i) & 1)
    return rank


def stage_one(attention: torch.Tensor, budget: int, mass: float) -> torch.Tensor:
    """Indices of the highest-attention tokens whose share of the total attention first reaches
    `mass` (at most `budget`; none when mass == 0). attention: [Nv] >= 0 -> [n1] long."""
    if mass <= 0 or budget <= 0:
        return torch.zeros(0, dtype=torch.long)
    att = attention.detach().float().cpu().clamp_min(0)
    order = torch.sort(att, descending=True, stable=True).indices
    total = float(att.sum())
    if total <= 0:
        return torch.zeros(0, dtype=torch.long)
    share = torch.cumsum(att[order], 0) / total
    n1 = int((share < mass - 1e-12).sum()) + 1  # the token that crosses `mass` is included
    return order[: min(n1, budget)]


def stage_two(coords: torch.Tensor, exclude: torch.Tensor, count: int) -> torch.Tensor:
    """`count` spatially uniform picks among tokens not in `exclude`.
    coords: [Nv, 3] long (frame, row, col) -> [count] long indices."""
    n = coords.shape[0]
    free = torch.ones(n, dtype=torch.bool)
    free[exclude] = False
    cand = free.nonzero().view(-1)
    if count <= 0 or cand.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    c = coords[cand].long()
    frame, rank = c[:, 0], bayer_rank(c[:, 1], c[:, 2])
    # within-frame order of the free cells (0 = best remaining cell of its frame)
    by_frame = torch.sort(frame * (int(rank.max()) + 1) + rank, stable=True).indices
    sorted_frames = frame[by_frame].contiguous()
    within = torch.empty_like(by_frame)
    within[by_frame] = torch.arange(by_frame.numel()) - torch.searchsorted(sorted_frames, sorted_frames)
    # round robin over frames: every frame takes its next cell before any frame takes one more
    order = torch.sort(within * (int(frame.max()) + 1) + frame, stable=True).indices
    return cand[order[:count]]


def select_video_tokens(attention: Optional[torch.Tensor], coords: torch.Tensor, keep: float,
                        mass: float) -> torch.Tensor:
    """The video tokens the drafter keeps: sorted indices [B] into the prompt's video tokens.

    attention: [Nv] target attention per video token (None: stage II only); coords: [Nv, 3]."""
    n = coords.shape[0]
    budget = keep_budget(n, keep)
    first = stage_one(attention, budget, mass) if attention is not None else torch.zeros(0, dtype=torch.long)
    second = stage_two(coords.cpu(), first, budget - first.numel())
    kept = torch.cat([first, second]).sort().values
    if kept.numel() != budget:  # cannot happen: stage II draws from Nv - n1 >= B - n1 tokens
        raise AssertionError(f"pruning kept {kept.numel()} tokens, budget {budget}")
    return kept


@dataclass(frozen=True)
class VideoPruning:
    """How the drafter's video is pruned (the engine passes this around; adapters do the rest)."""

    keep: float  # share of video tokens the drafter keeps, (0, 1]
    mass: float  # stage I attention-mass share, [0, 1]
    layer: int  # target decoder layer whose attention ranks the video tokens (negative: from the end)

    def draft_inputs(self, inputs: dict[str, Any], prefill: Any) -> dict[str, Any]:
        """The drafter's inputs: `inputs` plus the kept video-token indices (unchanged without video)."""
        if prefill.video_coords is None or prefill.video_coords.shape[0] == 0:
            return inputs
        kept = select_video_tokens(prefill.video_attention, prefill.video_coords, self.keep, self.mass)
        return {**inputs, VIDEO_KEEP_KEY: kept}
