"""SpecVLM pruning of the drafter's video tokens (method.md section 5). Pure tensors.

By default this computes what zju-jiyicheng/SpecVLM's code computes (commit
4fcd84ed8282d43f5a33b5ff1bbd674f6f7dfaa3; `utils/utils.py: drop_visual_tokens_specvlm`,
`convert_attention_to_score`, `get_attention_token_from_percentage`; called from
`decoding/tree_decoding*.py: initialize_tree_with_pruning` with `percentage=0.4` by
`inference.py: run_eval`, `--drop_rate 0.9`). The target always sees the whole video; the
drafter prefills on the prompt with only B of the Nv video tokens:

- **budget** B = floor(keep * Nv) (their `int(n * (1 - drop_rate))`), at least 1;
- **scores**: the softmax attention that the target's prompt tokens AFTER the last video token
  give each video token at prefill, mean over heads, over those query rows and over EVERY decoder
  layer (`layer=ALL_LAYERS`; the adapters' attention probe computes it);
- **stage I (verifier-guided)**: video tokens in decreasing order of score, as many as it takes
  for their summed score to reach `mass` (0.4) of the summed score of all video tokens (the token
  that reaches it included), at most B;
- **stage II (fill)**: the rest of the budget, `fill="linspace"`: the remaining video tokens in
  prompt order, picked at `torch.linspace(0, m - 1, count)` (truncated to integers) of their m
  positions; i.e. evenly spaced along the flattened (frame, row, col) sequence.

This project's options: `layer=<index>` (one decoder layer instead of the mean over all of them)
and `fill="dither"` (ordered-dither order of the (row, col) cell inside its frame, round robin over
frames: an even share per frame spread over the whole frame; a 1D stride can fall on the same
column of every row). mass = 0 leaves stage I empty (then linspace is their uniform pruning,
`drop_visual_tokens_uniform`). Deliberate differences from their code: B >= 1 (their code keeps no
video at all when keep * Nv < 1), B counts `keep * Nv` exactly (their 1 - 0.9 = 0.0999... keeps
one token fewer when Nv is a multiple of 10), ties in stage I keep prompt order, scores in
float32 from the model's own dtype (theirs: bf16 q/k, fp16 logits). Kept tokens stay in prompt
order and keep their ORIGINAL positions (1D or M-RoPE; the adapters feed them with the position
ids they have in the full prompt); their code runs both models with 1D positions and re-indexes
the drafter's pruned sequence (docs/baselines.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch

from lvspec_eval.config import VIDEO_FILLS

#: Key of the target-input dict that asks an adapter's `start` to prefill on kept video tokens only.
VIDEO_KEEP_KEY = "video_keep"
#: `VideoPruning.layer` (and the adapters' `attention_layer`) asking for the mean over every decoder layer.
ALL_LAYERS = "all"


def keep_budget(n_video: int, keep: float) -> int:
    """B = floor(keep * Nv) (SpecVLM's `int(n * (1 - drop_rate))`), at least 1 and at most Nv."""
    if n_video <= 0:
        return 0
    return max(1, min(n_video, math.floor(keep * n_video + 1e-9)))  # 1e-9: 0.29 * 100 is 28.999999999999996


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
    """Indices of the highest-attention tokens, best first, as many as it takes for their summed
    attention to reach `mass` of the total (the one that reaches it included; SpecVLM's
    `get_attention_token_from_percentage`), at most `budget`; none when mass == 0.
    attention: [Nv] >= 0 -> [n1] long."""
    if mass <= 0 or budget <= 0:
        return torch.zeros(0, dtype=torch.long)
    att = attention.detach().double().cpu().clamp_min(0)
    order = torch.sort(att, descending=True, stable=True).indices
    total = float(att.sum())
    if total <= 0:
        return torch.zeros(0, dtype=torch.long)
    reached = torch.cumsum(att[order], 0) >= mass * total  # [Nv]
    n1 = int(reached.to(torch.uint8).argmax()) + 1 if bool(reached.any()) else att.numel()
    return order[: min(n1, budget)]


def _free(n: int, exclude: torch.Tensor) -> torch.Tensor:
    """[m] long: indices 0..n-1 not in `exclude`, ascending (prompt order)."""
    free = torch.ones(n, dtype=torch.bool)
    free[exclude] = False
    return free.nonzero().view(-1)


def fill_linspace(coords: torch.Tensor, exclude: torch.Tensor, count: int) -> torch.Tensor:
    """`count` picks evenly spaced over the tokens not in `exclude`, in prompt order (SpecVLM's
    stage II: `available_positions[torch.linspace(0, m - 1, count, dtype=torch.long)]`).
    coords: [Nv, 3] (only its length is used) -> [count] long indices."""
    cand = _free(coords.shape[0], exclude)
    if count <= 0 or cand.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    return cand[torch.linspace(0, cand.numel() - 1, min(count, cand.numel()), dtype=torch.long)]


def fill_dither(coords: torch.Tensor, exclude: torch.Tensor, count: int) -> torch.Tensor:
    """`count` spatially uniform picks among tokens not in `exclude` (this project's fill): per frame
    in ordered-dither order of the (row, col) cell, round robin over frames.
    coords: [Nv, 3] long (frame, row, col) -> [count] long indices."""
    cand = _free(coords.shape[0], exclude)
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


#: Stage II fills by name (`VideoPruning.fill`, model arg `draft_video_fill`).
FILLS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "linspace": fill_linspace, "dither": fill_dither}


def stage_two(coords: torch.Tensor, exclude: torch.Tensor, count: int, fill: str = "linspace") -> torch.Tensor:
    """`count` picks among the tokens not in `exclude` by the named fill. coords: [Nv, 3] -> [count] long."""
    if fill not in FILLS:
        raise ValueError(f"video fill {fill!r}: choose one of {', '.join(FILLS)}")
    return FILLS[fill](coords, exclude, count)


def select_video_tokens(attention: Optional[torch.Tensor], coords: torch.Tensor, keep: float,
                        mass: float, fill: str = "linspace") -> torch.Tensor:
    """The video tokens the drafter keeps: sorted indices [B] into the prompt's video tokens.

    attention: [Nv] target attention per video token (None: stage II only); coords: [Nv, 3]."""
    n = coords.shape[0]
    budget = keep_budget(n, keep)
    first = stage_one(attention, budget, mass) if attention is not None else torch.zeros(0, dtype=torch.long)
    second = stage_two(coords.cpu(), first, budget - first.numel(), fill)
    kept = torch.cat([first, second]).sort().values
    if kept.numel() != budget:  # cannot happen: stage II draws from Nv - n1 >= B - n1 tokens
        raise AssertionError(f"pruning kept {kept.numel()} tokens, budget {budget}")
    return kept


@dataclass(frozen=True)
class VideoPruning:
    """How the drafter's video is pruned (the engine passes this around; adapters do the rest)."""

    keep: float  # share of video tokens the drafter keeps, (0, 1]
    mass: float = 0.4  # stage I attention-mass share, [0, 1]
    # target decoder layer(s) whose prefill attention ranks the video tokens: ALL_LAYERS (mean over
    # every layer, SpecVLM) or one index (negative: from the end); passed to the adapter's `start`
    layer: Union[int, str] = ALL_LAYERS
    fill: str = "linspace"  # stage II, a key of FILLS

    def __post_init__(self) -> None:
        if self.fill not in VIDEO_FILLS:
            raise ValueError(f"video fill {self.fill!r}: choose one of {', '.join(VIDEO_FILLS)}")
        if isinstance(self.layer, str) and self.layer != ALL_LAYERS:
            raise ValueError(f"pruning layer {self.layer!r}: give a decoder layer index or {ALL_LAYERS!r}")

    def draft_inputs(self, inputs: dict[str, Any], prefill: Any) -> dict[str, Any]:
        """The drafter's inputs: `inputs` plus the kept video-token indices (unchanged without video)."""
        if prefill.video_coords is None or prefill.video_coords.shape[0] == 0:
            return inputs
        kept = select_video_tokens(prefill.video_attention, prefill.video_coords, self.keep, self.mass, self.fill)
        return {**inputs, VIDEO_KEEP_KEY: kept}
