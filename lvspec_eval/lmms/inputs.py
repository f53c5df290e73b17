"""Model inputs from lmms-eval chat messages (what a request's `doc_to_messages` gives)."""

from __future__ import annotations

from typing import Any

from lmms_eval.protocol import ChatMessages

from lvspec_eval.adapters.base import HFAdapter


def prepare_inputs(target: HFAdapter, messages: Any, builtin: str = "qwen2_5_vl") -> dict[str, Any]:
    """The target's model inputs for lmms-eval chat `messages` (one video and text); the drafter
    reads the same inputs. Refuses an image request (naming `builtin`, the lmms-eval backend that
    decodes images for this family) and an empty prompt, naming the fix."""
    chat = ChatMessages(messages=messages)
    images, videos, _ = chat.extract_media()
    if images:
        shown = images[0] if isinstance(images[0], str) else type(images[0]).__name__
        raise ValueError(f"the request carries an image ({shown}) where a video is expected; lvspec backends "
                         f"decode videos: give the task a video, or run image tasks with lmms-eval's {builtin}")
    text = "".join(part.text or "" for m in chat.messages for part in m.content if part.type == "text")
    if not text.strip():
        raise ValueError("empty prompt: the request has no text (the task's doc_to_text gave an empty string); "
                         "fix the doc or the task's doc_to_text")
    hf_messages = chat.to_hf_messages(video_kwargs=target.video_kwargs(list(videos)))
    return target.prepare(hf_messages)
