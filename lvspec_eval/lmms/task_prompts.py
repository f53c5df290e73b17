"""A task's prompt and generation kwargs as lmms-eval gives them to the family's built-in backend.

lmms-eval resolves a task's model-specific entries by the `--model` string when it builds the task
(`ConfigurableTask._prepare_model_specific_config`): `lmms_eval_specific_kwargs[<model>]` (the
prompt pieces doc_to_text reads, e.g. videomme's `qwen3_vl` entry: "Question: ... Answer with the
option letter only.") and `model_specific_generation_kwargs[<model>]`, else their `default`
entries. A plugin backend such as `lvspec_qwen3_vl` therefore gets the `default` prompt where the
built-in `qwen3_vl` gets its own, and `method=ar` would answer another question than the built-in.
So the backend asks the task for the messages it gives the mirrored built-in (`BuiltinDefaults.model`):
the task's own `doc_to_messages` code run on a shallow copy of the task object whose resolved
prompt kwargs are the built-in's; the shared task object is never modified. Tasks with no entry
for the built-in (the usual case) are asked directly.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

Messages = Any


class BuiltinPrompts:
    """Per run: the built-in's view of each task (one shallow copy per task that needs one)."""

    def __init__(self, model: str):
        self.model = model  # the built-in's --model name, e.g. "qwen2_5_vl", "qwen3_vl", "llava_hf"
        self._views: dict[int, Any] = {}

    def _specific(self, task: Any, field: str) -> Any:
        """The task config's raw model-specific entry of the built-in (None when there is none or when
        the task was already built for the built-in's name)."""
        if getattr(task, "model_name", None) == self.model:
            return None
        raw = getattr(getattr(task, "config", None), field, None)
        return raw.get(self.model) if isinstance(raw, dict) else None

    def messages(self, doc_to_messages: Callable[[dict], Messages], doc: dict) -> Messages:
        """The request's messages for `doc` as the built-in would have received them."""
        task = getattr(doc_to_messages, "__self__", None)
        kwargs = self._specific(task, "lmms_eval_specific_kwargs") if task is not None else None
        if kwargs is None:
            return doc_to_messages(doc)
        view = self._views.get(id(task))
        if view is None:
            view = copy.copy(task)  # shallow: shares the dataset and config; only the resolved kwargs differ
            view.lmms_eval_specific_kwargs = kwargs
            self._views[id(task)] = view
        return getattr(view, doc_to_messages.__name__)(doc)

    def generation_kwargs(self, doc_to_messages: Any, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The request's generation kwargs with the built-in's model-specific entry applied over them."""
        task = getattr(doc_to_messages, "__self__", None)
        extra = self._specific(task, "model_specific_generation_kwargs") if task is not None else None
        return {**gen_kwargs, **extra} if isinstance(extra, dict) else gen_kwargs
