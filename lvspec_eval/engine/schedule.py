"""When the drafter starts: the draft schedule of a speculative method (model arg `draft_schedule`).

A speculative decode pays for the drafter before it can win anything: the drafter's prefill (its
vision tower included), the pruning's attention ranking, and a verify block wider than one token.
On an answer that ends after one token (a multiple-choice letter and EOS) there is nothing to win,
so every speculative method was slower than `ar` there (0.44-0.60x on the testbed MCQ task).

- `FixedSchedule` (`draft_schedule=fixed`, the paper's): the drafter prefills beside the target and
  drafts K tokens from the first round on.
- `AutoSchedule` (`draft_schedule=auto`, the default): as `fixed` when the request allows a long
  answer (max_new_tokens > short_answer_tokens), so a long answer decodes exactly as under `fixed`
  (same rounds, same tokens). On a short-answer request the target decodes its first step alone
  (provenance `T`), and the drafter is prefilled and drafts only if the answer goes on: a one-token
  answer then costs what `ar` costs, a longer one pays one plain target step (one round that emits
  one token) before drafting. The rule reads only the request, so a run's rounds and tokens never
  depend on the machine's timing.

The engine asks one question (`solo_tokens`): how many answer tokens the target emits alone before
the drafter starts; 1 is the prefill's token, i.e. the drafter starts at prefill. Built from the
model args by `lvspec_eval.engine.methods.build_method` only. Measured effect: docs/speed.md.
"""

from __future__ import annotations

from dataclasses import dataclass


class DraftSchedule:
    """Strategy: when the drafter of a speculative decode starts."""

    name: str = ""

    def solo_tokens(self, max_new_tokens: int) -> int:
        """Answer tokens the target emits alone before the drafter starts (>= 1; 1: at prefill)."""
        raise NotImplementedError


@dataclass(frozen=True)
class FixedSchedule(DraftSchedule):
    """The paper's: the drafter starts at prefill and drafts K tokens every round."""

    name = "fixed"

    def solo_tokens(self, max_new_tokens: int) -> int:
        return 1


@dataclass(frozen=True)
class AutoSchedule(DraftSchedule):
    """`fixed` above `short_answer_tokens`; on a short-answer request the drafter starts after the
    target's first step, and only if that step did not end the answer."""

    short_answer_tokens: int
    name = "auto"

    def solo_tokens(self, max_new_tokens: int) -> int:
        return 2 if max_new_tokens <= self.short_answer_tokens else 1
