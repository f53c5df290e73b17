"""Reduced vocabulary for training the testbed models, and expansion back to the full Qwen vocabulary.

Training on the ~150 Qwen ids the testbed uses (plus one *sink* row, never a target) is about 10x
faster per step than the full 151,936-row output layer. At load time the trained rows are
scattered to their real ids and every other row of the tied embedding / output matrix is set to
the sink row, so the full-vocabulary model makes the same greedy choices (checked in tests).
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any

from testbed import grammar as g
from testbed.fixtures.tokenizer import EMBEDDING_ROWS

if TYPE_CHECKING:  # pragma: no cover
    import torch

SINK = 0  # reduced index of the sink row


def all_texts() -> list[str]:
    """Every prompt and, word for word, every answer the grammar can produce."""
    texts = [g.CAPTION_PROMPT, g.LIST_PROMPT] + [g.mcq_prompt(a) for a in g.ATTRIBUTES] + list(g.LETTERS)
    combos = itertools.product(*g.ATTRIBUTES.values())
    for values in combos:
        attrs = g.Attributes(*values)
        texts.append(g.attribute_list(attrs))
        for i in range(4):  # paraphrase i in every slot
            style = {slot: tuple(1.0 if j == i else 0.0 for j in range(4)) for slot in g.FILLERS}
            texts.append(g.caption(attrs, random.Random(0), style))
    return texts


def reduced_ids(tokenizer: Any, fam: Any = None) -> list[int]:
    """Sorted real ids the testbed needs: chat scaffolding of ``fam`` (a :class:`~testbed.
    families.Family`, default Qwen2.5-VL), vision tokens, prompts, answers, EOS."""
    from testbed.families import QwenFamily

    fam = fam or QwenFamily()
    ids: set[int] = set()
    for text in all_texts() + ["q".join(fam.chat_scaffold(tokenizer))]:
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        # the answer follows "assistant\n" directly: its first word has no leading space
        ids.update(tokenizer(text.split(" ", 1)[0], add_special_tokens=False)["input_ids"])
    for name in fam.special_tokens:
        ids.add(tokenizer.convert_tokens_to_ids(name))
    return sorted(ids)


class VocabMap:
    """Real id <-> reduced index; reduced index 0 is the sink."""

    def __init__(self, real_ids: list[int]):
        import numpy as np

        self.real_ids = list(real_ids)
        self.size = len(self.real_ids) + 1
        self._to_reduced = np.full(EMBEDDING_ROWS, -1, dtype=np.int64)
        self._to_reduced[self.real_ids] = np.arange(1, self.size)

    def reduce(self, ids: Any) -> Any:
        import numpy as np

        arr = np.asarray(ids, dtype=np.int64)
        out = self._to_reduced[arr]
        if (out < 0).any():
            missing = sorted(set(arr[out < 0].tolist()))
            raise KeyError(f"ids {missing[:10]} are not in the testbed vocabulary; rebuild it with reduced_ids()")
        return out

    def real(self, reduced: int) -> int:
        return self.real_ids[reduced - 1] if reduced > 0 else -1


def expand_embedding(reduced_weight: "torch.Tensor", vmap: VocabMap, rows: int = EMBEDDING_ROWS) -> "torch.Tensor":
    """Full-vocabulary matrix: reduced row i at real id ``vmap.real_ids[i-1]``, the sink row elsewhere."""
    import torch

    full = reduced_weight[SINK].expand(rows, -1).clone()
    full[torch.tensor(vmap.real_ids)] = reduced_weight[1:]
    return full
