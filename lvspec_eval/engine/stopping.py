"""Stop checks of one decode, run on every emitted token (also inside a speculative round).

Plain greedy decoding checks after each token; a round emits several tokens at once, so the
engine pushes them one by one and ends the decode on the first token that stops it. Tokens after
it are never emitted, so a lossless method stops on the same token as `ar`, with the same counts.

Which `until` strings reach this object is the backend's business (each family follows its
built-in lmms-eval backend, which may ignore them): here they are plain strings.
"""

from __future__ import annotations

from typing import Iterable, Optional

from lvspec_eval.detokenize import Decode, IncrementalText

EOS, UNTIL, MAX_NEW_TOKENS = "eos", "until", "max_new_tokens"


class StopCondition:
    """`push(token)` for each emitted token returns why decoding stops there ('' to go on).

    Order at one token: EOS (the EOS token is kept, as HF generate keeps it), then an `until`
    string completed by the text the token adds, then `max_new_tokens`. The `until` test is
    incremental: only the text new tokens add is searched, with a tail of max(len(stop)) - 1
    characters of earlier text, so a decode costs O(answer length), not a full decode per round.
    `detokenize` (ids -> text) must match the text the caller returns (e.g. special tokens
    skipped); needed only when there are `until` strings."""

    def __init__(self, max_new_tokens: int, eos_ids: Iterable[int] = (), until: Iterable[str] = (),
                 detokenize: Optional[Decode] = None):
        self.max_new_tokens = int(max_new_tokens)
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.until = tuple(u for u in until if u)
        if self.until and detokenize is None:
            raise ValueError(f"until strings {self.until!r} need a detokenize callable (ids -> text)")
        self._text = IncrementalText(detokenize) if self.until else None
        self._keep = max((len(u) for u in self.until), default=1) - 1  # tail that a stop string may start in
        self._tail = ""
        self.emitted = 0

    def push(self, token: int) -> str:
        self.emitted += 1
        if token in self.eos_ids:
            return EOS
        if self._text is not None:
            window = self._tail + self._text.push(token)
            if any(stop in window for stop in self.until):
                return UNTIL
            self._tail = window[-self._keep:] if self._keep else ""
        if self.emitted >= self.max_new_tokens:
            return MAX_NEW_TOKENS
        return ""
