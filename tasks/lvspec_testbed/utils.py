"""Doc hooks of the testbed tasks ``lvspec_testbed_caption`` and ``lvspec_testbed_mcq``.

The answer grammar, the parser and the scoring live in ``lvspec_eval.testbed.grammar``
(pure Python). Video paths resolve relative to this file, so the folder can be copied anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lvspec_eval.testbed.grammar import ATTRIBUTES, parse_mcq, score_caption

TASK_DIR = Path(__file__).resolve().parent


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [str(TASK_DIR / "videos" / doc["video"])]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def caption_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """``anchor_f1`` and ``attr_<attribute>`` of the answer against the clip's true attributes."""
    return score_caption(results[0] if results else "", doc["attributes"])


def mcq_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """``accuracy``: the first option letter of the answer equals the correct one."""
    return {"accuracy": float(parse_mcq(results[0] if results else "") == doc["answer"])}


CAPTION_METRICS = ["anchor_f1"] + [f"attr_{a}" for a in ATTRIBUTES]
