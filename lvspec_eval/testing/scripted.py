"""A scripted drafter: proposes a known token sequence, wrong at chosen output positions.

It implements the adapter/session interface the engine uses (nothing model-specific), so
tests know exactly how many draft tokens each round must accept."""

from __future__ import annotations

from typing import Any, Optional

import torch

from lvspec_eval.adapters.base import Prefill


class ScriptedSession:
    def __init__(self, adapter: "ScriptedDrafter", prompt_len: int):
        self.adapter = adapter
        self.prompt_len = prompt_len
        self.length = prompt_len
        self.last_hidden = None

    @property
    def vocab_size(self) -> int:
        return self.adapter.vocab_size

    def extend(self, ids: torch.Tensor) -> torch.Tensor:  # [k] -> [k, V]
        k = ids.numel()
        rows = torch.full((k, self.vocab_size), -1e4)
        for r in range(k):
            j = self.length + r + 1 - self.prompt_len  # output index this row predicts
            rows[r, self.adapter.token_at(j)] = 1e4
        self.length += k
        return rows

    def crop(self, length: int) -> None:
        if length > self.length:
            raise ValueError("cannot crop beyond the cached length")
        self.length = length

    def close(self) -> None:
        pass


class ScriptedDrafter:
    """Proposes `reference[j]` for output index j, or a wrong token when j is in `wrong`."""

    def __init__(self, reference: list[int], wrong: set[int], vocab_size: int):
        self.reference = list(reference)
        self.wrong = set(wrong)
        self.vocab_size = vocab_size
        self.input_device = torch.device("cpu")
        self.name = "scripted"

    def token_at(self, j: int) -> int:
        ref = self.reference[j] if j < len(self.reference) else 0
        return (ref + 1) % self.vocab_size if j in self.wrong or j >= len(self.reference) else ref

    def start(self, inputs: dict[str, Any], capture_layer: Optional[int] = None) -> tuple[ScriptedSession, Prefill]:
        n = int(inputs["input_ids"].shape[-1])
        return ScriptedSession(self, n), None  # the engine ignores the drafter's prefill


def expected_schedule(n_tokens: int, k: int, wrong: set[int]) -> dict[str, Any]:
    """Rounds and per-position acceptance that strict SD must produce against the scripted
    drafter, for a reference of n_tokens tokens (token 0 comes from the target's prefill) and
    max_new_tokens = n_tokens with no EOS inside."""
    j, rounds, per_pos, accepted = 1, 0, [0] * k, 0
    while j < n_tokens:
        kk = min(k, n_tokens - j - 1)
        block = range(j, j + kk)
        first_wrong = next((p for p in block if p in wrong), None)
        n = kk if first_wrong is None else first_wrong - j
        for i in range(n):
            per_pos[i] += 1
        accepted += n
        rounds += 1
        j += n + 1
    return {"rounds": rounds, "accepted_per_position": per_pos, "accepted": accepted}
