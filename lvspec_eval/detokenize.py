"""Incremental detokenization: the text each new token adds, as streaming servers compute it.

No torch import: the records (read by `lvspec-report`) and the engine's stop checks share it.
"""

from __future__ import annotations

from typing import Callable

Decode = Callable[[list[int]], str]  # token ids -> text (e.g. tokenizer.decode with fixed options)


class IncrementalText:
    """Push token ids one at a time; each push returns the text that token adds.

    Two offsets (prefix, read) as in vLLM's and TGI's detokenizers: the new text is
    decode(ids[prefix:]) minus decode(ids[prefix:read]), so byte-level BPE spaces and merges
    come out as a decode of the whole sequence writes them. A token that ends inside a multi-byte
    character adds '' and its bytes appear with the token that completes the character; `flush`
    returns such a trailing incomplete character. The pieces joined equal decode(all ids).
    Two `decode` calls per push, on a window of a few ids: O(1) per token."""

    def __init__(self, decode: Decode):
        self._decode = decode
        self._ids: list[int] = []  # ids from the prefix offset on
        self._read = 0  # ids[:_read] are already turned into text

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        prefix = self._decode(self._ids[: self._read])
        text = self._decode(self._ids)
        if len(text) > len(prefix) and not text.endswith("\ufffd") and text.startswith(prefix):
            self._ids = self._ids[self._read:]  # the next prefix window starts where this one was read
            self._read = len(self._ids)
            return text[len(prefix):]
        return ""

    def flush(self) -> str:
        """The text of the ids pushed since the last non-empty piece (an incomplete character at the end)."""
        if self._read == len(self._ids):
            return ""
        return self._decode(self._ids)[len(self._decode(self._ids[: self._read])):]
