"""The validation check that stops training: greedy captions and MCQ answers on held-out clips."""

from __future__ import annotations

from typing import Any

from testbed import clips
from testbed import grammar as g
from testbed.train.data import Examples, collate


def greedy_answer(model: Any, ex: Examples, question: str, pixels: Any, max_new_tokens: int) -> list[int]:
    import torch

    prompt = ex.prompt(question)
    batch = collate([(prompt, [0.0] * len(prompt))], pixels[None], int(ex.video_id), ex.family.name, model.device)
    batch.pop("weights")
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=int(ex.im_end),
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


def validate(model: Any, ex: Examples, vmap: Any, pixels: Any, seeds: list[int]) -> dict[str, Any]:
    """Greedy captions and MCQ answers on validation clips -> anchor_f1, attr_*, mcq accuracy."""
    model.eval()
    scores: dict[str, list[float]] = {}
    mcq = []
    for i, seed in enumerate(seeds):
        attrs = clips.clip_attributes(seed)
        ids = greedy_answer(model, ex, g.CAPTION_PROMPT, pixels[i], 80)
        text = ex.tok.decode([vmap.real(t) for t in ids if t != ex.im_end and t > 0])
        for k, v in g.score_caption(text, attrs).items():
            scores.setdefault(k, []).append(v)
        attribute = list(g.ATTRIBUTES)[i % len(g.ATTRIBUTES)]
        ans = greedy_answer(model, ex, g.mcq_prompt(attribute), pixels[i], 3)
        letter = g.parse_mcq(ex.tok.decode([vmap.real(t) for t in ans if t != ex.im_end and t > 0]))
        mcq.append(float(letter == g.mcq_answer(attrs, attribute)))
        scores.setdefault(f"mcq_{attribute}", []).append(mcq[-1])
    model.train()
    out = {k: sum(v) / len(v) for k, v in scores.items()}
    out["mcq"] = sum(mcq) / len(mcq)
    out["min_attr"] = min(out[f"attr_{a}"] for a in g.ATTRIBUTES)
    out["example"] = text
    return out
