"""The per-token stop checks (engine/stopping.py) and the incremental detokenizer, without models."""

import random

import pytest

from lvspec_eval.detokenize import IncrementalText
from lvspec_eval.engine.stopping import StopCondition

# a byte-level vocabulary: some tokens end inside a multi-byte character, 0 is a special token
PIECES = {0: b"", 1: b"a", 2: b" b", 3: b"\n", 4: b"\n\n", 5: "é".encode()[:1], 6: "é".encode()[1:], 7: b"Q:", 8: b".",
          9: b" ", 10: "日".encode()[:2], 11: "日".encode()[2:]}


def decode(ids):
    return b"".join(PIECES[i] for i in ids).decode("utf-8", errors="replace")


def first_stop_by_full_decode(ids, until):
    """What plain greedy decoding with a full decode after every token finds: the first i whose text has a stop."""
    for i in range(1, len(ids) + 1):
        if any(u in decode(ids[:i]) for u in until):
            return i - 1
    return None


def test_incremental_text_joins_to_the_full_decode():
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.choice(list(PIECES)) for _ in range(rng.randint(0, 12))]
        stream = IncrementalText(decode)
        pieces = [stream.push(i) for i in ids]
        assert "".join(pieces) + stream.flush() == decode(ids)
    stream = IncrementalText(decode)
    assert [stream.push(i) for i in (1, 5, 6)] == ["a", "", "é"]  # the split character comes whole


@pytest.mark.parametrize("until", [("\n\n",), ("Q:",), ("é",), ("a\n",), (". b", "\n\n"), ("日",), ("b\n\na",)])
def test_until_matches_a_full_decode_after_every_token(until):
    rng = random.Random(1)
    hits = 0
    for _ in range(2000):
        ids = [rng.choice(list(PIECES)) for _ in range(rng.randint(1, 16))]
        stop = StopCondition(max_new_tokens=100, eos_ids=(), until=until, detokenize=decode)
        reasons = [stop.push(t) for t in ids]
        got = next((i for i, r in enumerate(reasons) if r), None)
        assert got == first_stop_by_full_decode(ids, until), (ids, reasons)
        if got is not None:
            assert reasons[got] == "until"
            hits += 1
    assert hits > 10  # the table exercises the stop, not only its absence


def test_order_at_one_token_eos_then_until_then_max():
    stop = StopCondition(max_new_tokens=2, eos_ids=(8,), until=("a.",), detokenize=decode)
    assert stop.push(1) == ""
    assert stop.push(8) == "eos"  # completes "a." too, and is the 2nd token: EOS wins
    stop = StopCondition(max_new_tokens=2, eos_ids=(), until=("a b",), detokenize=decode)
    assert [stop.push(1), stop.push(2)] == ["", "until"]  # until before max_new_tokens
    stop = StopCondition(max_new_tokens=3, eos_ids=(0,))
    assert [stop.push(1), stop.push(2), stop.push(3)] == ["", "", "max_new_tokens"]
    assert StopCondition(max_new_tokens=1).push(1) == "max_new_tokens"


def test_empty_stop_strings_are_ignored_and_until_needs_a_detokenizer():
    stop = StopCondition(max_new_tokens=5, until=("",))  # no detokenizer needed: nothing to search
    assert [stop.push(1) for _ in range(5)][-1] == "max_new_tokens"
    with pytest.raises(ValueError, match="detokenize"):
        StopCondition(max_new_tokens=5, until=("x",))


def test_the_search_window_stays_short():
    """Only the new text plus a tail of len(stop) - 1 characters is searched (no quadratic re-decode)."""
    calls = []

    def counting(ids):
        calls.append(len(ids))
        return decode(ids)

    stop = StopCondition(max_new_tokens=10_000, until=("\n\nQ:",), detokenize=counting)
    for _ in range(2000):
        stop.push(1)
    assert max(calls) <= 2 and len(stop._tail) == 3
