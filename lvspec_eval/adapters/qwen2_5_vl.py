"""Qwen2.5-VL: loading, input preparation (as lmms-eval's built-in `qwen2_5_vl` chat backend),
M-RoPE position ids for multi-token forwards, per-session rope state."""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from lvspec_eval.adapters.base import HFAdapter, Prefill, Session
from lvspec_eval.adapters.loading import load_pretrained, resolve_dtype

VIDEO_TOKEN_TYPE = 2
IMAGE_TOKEN_TYPE = 1


class QwenSession(Session):
    """Keeps this sample's M-RoPE delta: text position p sits at rope position p + rope_delta."""

    rope_delta: int = 0

    def position_ids(self, k: int) -> torch.Tensor:  # [3, 1, k]
        pos = torch.arange(self.length, self.length + k, device=self.adapter.input_device) + self.rope_delta
        return pos.view(1, 1, k).expand(3, 1, k)


def _still_image(path: str) -> bool:
    """True for a file that PIL reads as a single picture (an image given where a video is expected)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) <= 1
    except Exception:  # not an image PIL knows: leave it to the video reader
        return False


def frame_count(video_path: str, max_num_frames: int) -> int:
    """lmms-eval's qwen2_5_vl rule: max(2, (min(max_num_frames, total) // 2) * 2)."""
    import decord

    if "://" not in video_path:
        if not os.path.isfile(video_path):
            raise ValueError(f"video file {video_path!r} does not exist; fix the path or the task's doc_to_visual")
        if _still_image(video_path):
            raise ValueError(f"{video_path!r} is a still image where a video is expected; give a video file "
                             "(lvspec backends decode videos)")
    try:
        total = len(decord.VideoReader(video_path))
    except Exception as exc:  # decord raises its own error types
        raise ValueError(f"cannot read video {video_path!r} ({exc}); check that the file is a complete, valid video") from exc
    if total <= 0:
        raise ValueError(f"video {video_path!r} has no frames; replace or drop the file")
    return max(2, (min(max_num_frames, total) // 2) * 2)


class QwenVLAdapter(HFAdapter):
    session_class = QwenSession

    def __init__(self, model, processor, name: str, *, max_num_frames: int = 32, fps: Optional[float] = None,
                 min_pixels: int = 256 * 28 * 28, max_pixels: int = 1605632):
        super().__init__(model, processor, name)
        self.max_num_frames = max_num_frames
        self.fps = fps
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

    @classmethod
    def load(cls, path: str, *, dtype: str = "bfloat16", device_map: Any = "cpu",
             attn_implementation: Optional[str] = None, offload_folder: Optional[str] = None,
             **video_args: Any) -> "QwenVLAdapter":
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        model = load_pretrained(Qwen2_5_VLForConditionalGeneration, path, dtype=resolve_dtype(dtype),
                                device_map=device_map, attn_implementation=attn_implementation,
                                offload_folder=offload_folder)
        processor = AutoProcessor.from_pretrained(
            path, max_pixels=video_args.get("max_pixels", 1605632), min_pixels=video_args.get("min_pixels", 256 * 28 * 28)
        )
        return cls(model, processor, path, **video_args)

    # -- inputs -------------------------------------------------------------------------------
    def video_kwargs(self, video_paths: list[str]) -> dict[str, Any]:
        """The per-video kwargs of lmms-eval's built-in backend (pixel bounds, fps or nframes)."""
        kwargs: dict[str, Any] = {"max_pixels": self.max_pixels, "min_pixels": self.min_pixels}
        if self.fps is not None:
            kwargs["fps"] = self.fps
        elif video_paths:
            kwargs["nframes"] = frame_count(video_paths[0], self.max_num_frames)
        else:
            kwargs["nframes"] = self.max_num_frames
        return kwargs

    def prepare(self, hf_messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Processor inputs for one chat (messages in HF format with video kwargs already set)."""
        from qwen_vl_utils import process_vision_info

        batched = [hf_messages]
        text = self.processor.apply_chat_template(batched, tokenize=False, add_generation_prompt=True)
        images, videos, _ = process_vision_info(batched, return_video_kwargs=True, return_video_metadata=True)
        metadata = None
        if videos is not None:
            videos, metadata = (list(x) for x in zip(*videos))
        return dict(self.processor(text=text, images=images, videos=videos, video_metadata=metadata,
                                   padding=True, padding_side="right", return_tensors="pt"))

    # -- prefill ------------------------------------------------------------------------------
    def start(self, inputs: dict[str, Any], capture_layer: Optional[int] = None) -> tuple[QwenSession, Prefill]:
        device = self.input_device
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        input_ids = inputs["input_ids"]  # [1, S]
        types = inputs.get("mm_token_type_ids")
        if types is None:
            types = torch.zeros_like(input_ids)
        has_visual = inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None
        if has_visual:
            position_ids, deltas = self.model.model.get_rope_index(
                input_ids, mm_token_type_ids=types, image_grid_thw=inputs.get("image_grid_thw"),
                video_grid_thw=inputs.get("video_grid_thw"), second_per_grid_ts=inputs.get("second_per_grid_ts"),
                attention_mask=inputs.get("attention_mask"),
            )
            rope_delta = int(deltas.view(-1)[0])
        else:
            s = input_ids.shape[1]
            position_ids = torch.arange(s, device=device).view(1, 1, s).expand(3, 1, s)
            rope_delta = 0
        cache = self.new_cache()
        with torch.inference_mode(), self.capture(capture_layer) as captured:
            out = self.model(**inputs, position_ids=position_ids, use_cache=True, logits_to_keep=1,
                             **{self.cache_kwarg: cache})
        session = QwenSession(self, cache, input_ids.shape[1], capture_layer)
        session.rope_delta = rope_delta
        visual = [o.pooler_output for o in (out.video_outputs, out.image_outputs) if o is not None]
        visual_features = torch.cat([torch.cat(list(v), 0) for v in visual], 0) if visual else None
        prefill = Prefill(
            logits=out.logits[0, -1],
            prompt_ids=input_ids[0],
            text_mask=(types[0] == 0),
            visual_features=visual_features,
            hidden=captured[0][0] if captured else None,
        )
        return session, prefill
