"""Training data: seeded clips (``clips.py``) rendered, H.264 round-tripped (the pixels evaluation sees) and
turned into ``pixel_values_videos`` by the family's real video processor, cached once in
``$LVSPEC_CACHE/testbed/data-*``; token sequences (reduced ids) with loss weights for the three kinds
of example (a caption in the role's filler style, the short attribute list, a multiple-choice
question; anchor tokens weigh 3x); their collation into model inputs."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from testbed import clips
from testbed import grammar as g
from testbed.atomic import atomic_file
from testbed.families import family
from testbed.paths import testbed_cache

DATA_FORMAT = 2  # bump when clips.render changes
ANCHOR_WEIGHT = 3.0
#: Relative share of MCQ training questions per attribute: motion, learned last, is asked twice as often.
MCQ_SHARE = {"motion": 2.0}


def _encode_clips(seeds: list[int], fam: Any) -> Any:
    import numpy as np

    proc = fam.processor()
    out = np.empty((len(seeds), *fam.pixel_shape), dtype=np.float16)
    for i, seed in enumerate(seeds):
        out[i] = fam.encode(clips.roundtrip(clips.render(seed)[0]), proc).astype(np.float16)
    return out


def clip_tensor_file(split: str, n: int, family_name: str = "qwen2_5_vl") -> Path:
    """The video tensors of the first ``n`` clips of ``split`` as a cached float16 memmap (built once)."""

    fam = family(family_name)
    path = testbed_cache() / f"data-v{DATA_FORMAT}" / f"{fam.cache_prefix}{split}-{n}.f16"
    if path.is_file():
        return path
    seeds = clips.split_seeds(split, n)
    print(f"[testbed] encoding {n} {split} clips -> {path}", flush=True)
    t0 = time.time()
    arr = _encode_clips(seeds, fam)
    with atomic_file(path) as tmp:
        arr.tofile(tmp)
    print(f"[testbed] encoded {n} clips in {time.time() - t0:.0f} s", flush=True)
    return path


def load_clip_tensors(split: str, n: int, family_name: str = "qwen2_5_vl") -> Any:
    import numpy as np

    return np.memmap(clip_tensor_file(split, n, family_name), dtype=np.float16, mode="r",
                     shape=(n, *family(family_name).pixel_shape))


class Examples:
    """Builds token sequences (reduced ids) with loss weights for the three kinds of example."""

    def __init__(self, tokenizer: Any, vmap: Any, family_name: str = "qwen2_5_vl"):
        self.tok = tokenizer
        self.vmap = vmap
        self.family = family(family_name)
        self._head, self._tail = self.family.chat_scaffold(tokenizer)
        self._prompts: dict[str, list[int]] = {}
        self.im_end = vmap.reduce([tokenizer.convert_tokens_to_ids("<|im_end|>")])[0]
        self.video_id = vmap.reduce([tokenizer.convert_tokens_to_ids(self.family.video_token)])[0]

    def prompt(self, question: str) -> list[int]:
        if question not in self._prompts:
            ids = self.tok(self._head + question + self._tail, add_special_tokens=False)["input_ids"]
            self._prompts[question] = self.vmap.reduce(ids).tolist()
        return self._prompts[question]

    def answer(self, text: str, anchors: bool) -> tuple[list[int], list[float]]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = self.vmap.reduce(enc["input_ids"]).tolist()
        weights = [1.0] * len(ids)
        if anchors:
            spans = g.anchor_char_spans(text)
            for i, (a, b) in enumerate(enc["offset_mapping"]):
                if any(a < e and s < b for s, e in spans):
                    weights[i] = ANCHOR_WEIGHT
        return ids + [int(self.im_end)], weights + [1.0]

    def sample(self, attrs: g.Attributes, rng: random.Random, style: str,
               only: str | None = None) -> tuple[list[int], list[float]]:
        """(sequence, weights) with weight 0 on the prompt; ``only``: an MCQ question on that attribute."""
        kind = "mcq" if only else rng.choices(("caption", "list", "mcq"), weights=(0.45, 0.25, 0.30))[0]
        if kind == "caption":
            prompt, (ans, w) = self.prompt(g.CAPTION_PROMPT), self.answer(g.caption(attrs, rng, style), True)
        elif kind == "list":
            prompt, (ans, w) = self.prompt(g.LIST_PROMPT), self.answer(g.attribute_list(attrs), True)
        else:
            attribute = only or rng.choices(list(g.ATTRIBUTES), weights=[MCQ_SHARE.get(a, 1.0) for a in g.ATTRIBUTES])[0]
            prompt = self.prompt(g.mcq_prompt(attribute))
            ans, w = self.answer(g.mcq_answer(attrs, attribute), False)
            w = [ANCHOR_WEIGHT] + w[1:]
        return prompt + ans, [0.0] * len(prompt) + w


def collate(seqs: list[tuple[list[int], list[float]]], pixels: Any, video_id: int,
            family_name: str = "qwen2_5_vl", device: Any = "cpu") -> dict[str, Any]:
    import torch

    n = max(len(s) for s, _ in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)  # pad with the sink (masked out)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    weights = torch.zeros(len(seqs), n)
    for i, (s, w) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        weights[i, : len(w)] = torch.tensor(w)
    fam = family(family_name)
    batch = {"input_ids": ids, "attention_mask": mask, **fam.token_type_inputs(ids, video_id),
             **fam.batch_inputs(pixels, len(seqs)), "weights": weights}
    return {k: v.to(device) for k, v in batch.items()}
