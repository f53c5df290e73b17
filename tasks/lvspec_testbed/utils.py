"""Doc hooks of the testbed tasks ``lvspec_testbed_caption`` and ``lvspec_testbed_mcq``.

The answer grammar, the parser and the scoring live in the checkout's ``testbed/grammar.py``
(pure Python), two folders up from this file: the task ships with the testbed, not with the installed
package, so its folder stays inside the checkout. Video paths resolve relative to this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TASK_DIR = Path(__file__).resolve().parent
_CHECKOUT = str(TASK_DIR.parent.parent)  # lmms-eval imports this file by path: make `testbed` importable
if _CHECKOUT not in sys.path:
    sys.path.insert(0, _CHECKOUT)

from testbed.grammar import ATTRIBUTES, parse_mcq, score_caption  # noqa: E402


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
