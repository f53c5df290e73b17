"""Qwen2.5-VL: loading, input preparation (as lmms-eval's built-in `qwen2_5_vl` chat backend),
M-RoPE position ids for multi-token forwards, per-session rope state."""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from lvspec_eval.adapters.base import HFAdapter, Session, VisualFeatures, feature_rows
from lvspec_eval.adapters.loading import load_pretrained, resolve_dtype


class QwenSession(Session):
    """M-RoPE: a token fed after `length` cached ones sits at rope position length + offset on all
    three axes (offset = this sample's rope delta, plus the tokens a pruned prefill left out)."""

    def position_ids(self, k: int) -> torch.Tensor:  # [3, 1, k]
        return super().position_ids(k).view(1, 1, k).expand(3, 1, k)


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
    return max(2, (min(max_num_frames, count_frames(video_path)) // 2) * 2)


def count_frames(video_path: str) -> int:
    """Frames of a local video file (decord), with clear errors for a missing, still or broken file."""
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
    return total


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

    def video_coords(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(frame, row, col) of each video token: per video a (t, h/m, w/m) merged grid in raster
        order (m = spatial merge size), as get_rope_index lays them out."""
        grids = inputs.get("video_grid_thw")
        if grids is None:
            return torch.zeros(0, 3, dtype=torch.long)
        m = self.model.config.vision_config.spatial_merge_size
        coords, frame0 = [], 0
        for t, h, w in grids.tolist():
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h // m), torch.arange(w // m),
                                              indexing="ij"), -1)
            coords.append(grid.view(-1, 3) + torch.tensor([frame0, 0, 0]))
            frame0 += t
        return torch.cat(coords)

    # -- prefill hooks ------------------------------------------------------------------------
    def token_types(self, inputs: dict[str, Any]) -> torch.Tensor:  # [S]: the processor's mm_token_type_ids
        types = inputs.get("mm_token_type_ids")
        return torch.zeros_like(inputs["input_ids"][0]) if types is None else types[0]

    def prompt_positions(self, inputs: dict[str, Any], types: torch.Tensor) -> tuple[torch.Tensor, int]:
        """M-RoPE ids [3, 1, S] from the model's own get_rope_index, and its rope delta."""
        input_ids = inputs["input_ids"]  # [1, S]
        if inputs.get("image_grid_thw") is None and inputs.get("video_grid_thw") is None:
            s = input_ids.shape[1]
            return torch.arange(s, device=input_ids.device).view(1, 1, s).expand(3, 1, s), 0
        position_ids, deltas = self.model.model.get_rope_index(
            input_ids, mm_token_type_ids=types.view(1, -1), image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"), second_per_grid_ts=inputs.get("second_per_grid_ts"),
            attention_mask=inputs.get("attention_mask"),
        )
        return position_ids, int(deltas.view(-1)[0])

    def visual_features(self, inputs: dict[str, Any]) -> VisualFeatures:
        """This model's own merged image and video features."""
        inner = self.model.model
        features = VisualFeatures()
        if inputs.get("pixel_values") is not None:
            out = inner.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
            features.image = feature_rows(out.pooler_output)
        if inputs.get("pixel_values_videos") is not None:
            out = inner.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
            features.video = feature_rows(out.pooler_output)
        return features
