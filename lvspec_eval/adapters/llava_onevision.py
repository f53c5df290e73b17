"""LLaVA-OneVision (llava-hf checkpoints): loading, input preparation as lmms-eval's built-in
simple `llava_hf` backend, 1D positions (explicit, so that a pruned drafter keeps the original
ones), pooled video features."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from lvspec_eval.adapters.base import IMAGE, TEXT, VIDEO, HFAdapter, VisualFeatures, feature_rows
from lvspec_eval.adapters.loading import load_pretrained, resolve_dtype

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"


def sample_frames(video_path: str, max_frames_num: int) -> Any:
    """lmms-eval's llava_hf `load_video`: `max_frames_num` frames at np.linspace(0, total-1) (int),
    decord, as a uint8 array (frames, height, width, 3)."""
    import decord
    import numpy as np

    try:
        vr = decord.VideoReader(video_path, ctx=decord.cpu(0))
    except Exception as exc:  # decord raises its own error types
        raise ValueError(f"cannot read video {video_path!r} ({exc}); check that the file exists and is a valid video") from exc
    total = len(vr)
    if total <= 0:
        raise ValueError(f"video {video_path!r} has no frames; replace or drop the file")
    idx = np.linspace(0, total - 1, max_frames_num, dtype=int).tolist()
    return vr.get_batch(idx).asnumpy()


class LlavaOnevisionAdapter(HFAdapter):
    """1D positions, explicit (the base `Session`'s), so that a pruned drafter keeps the original ones."""

    def __init__(self, model, processor, name: str, *, max_num_frames: int = 32, **_ignored: Any):
        super().__init__(model, processor, name)
        self.max_num_frames = max_num_frames
        self.image_token_id = int(model.config.image_token_id)
        self.video_token_id = int(model.config.video_token_id)

    @classmethod
    def load(cls, path: str, *, dtype: str = "bfloat16", device_map: Any = "cpu",
             attn_implementation: Optional[str] = None, **video_args: Any) -> "LlavaOnevisionAdapter":
        """`fps`, `min_pixels`, `max_pixels` do not apply (llava_hf samples `max_num_frames` frames
        and its processor resizes them to the vision tower's size); they are ignored."""
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        model = load_pretrained(LlavaOnevisionForConditionalGeneration, path, dtype=resolve_dtype(dtype),
                                device_map=device_map, attn_implementation=attn_implementation)
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"  # as llava_hf (no effect at batch size 1)
        return cls(model, processor, path, max_num_frames=video_args.get("max_num_frames", 32))

    # -- inputs -------------------------------------------------------------------------------
    def video_kwargs(self, video_paths: list[str]) -> dict[str, Any]:
        return {}  # frames are sampled in `prepare`, as llava_hf does

    def prepare(self, hf_messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Processor inputs built exactly as lmms-eval's simple `llava_hf` backend builds them:
        the text is "<video>\\n" (or "<image> <image>...\\n") + the request text, sent as plain
        string content through the tokenizer's chat template; the first video is sampled with
        `sample_frames`; float tensors are cast to the model's dtype."""
        texts, images, videos = [], [], []
        for message in hf_messages:
            for part in message["content"]:
                if part.get("type") == "text":
                    texts.append(part["text"])
                elif part.get("type") == "image":
                    images.append(part["image"])
                elif part.get("type") == "video":
                    videos.append(part["video"])
        context = "\n".join(texts)
        if IMAGE_TOKEN not in context:
            if images and not videos:
                context = f"{' '.join([IMAGE_TOKEN] * len(images))}\n{context}"
            elif videos:
                context = f"{' '.join([VIDEO_TOKEN] * len(videos))}\n{context}"
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": context}], tokenize=False,
                                                  add_generation_prompt=True)
        if videos:
            batch = self.processor(videos=[sample_frames(videos[0], self.max_num_frames)], text=text, return_tensors="pt")
        elif images:
            batch = self.processor(images=images, text=text, return_tensors="pt")
        else:
            batch = self.processor(text=text, return_tensors="pt")
        dtype = self.model.dtype
        return {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.items()}

    def video_coords(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(frame, row, col) of each video token: per frame a ceil(P/2) x ceil(P/2) pooled grid
        (P patches a side), frames in order, then one newline token per video (frame T, 0, 0)."""
        pixels = inputs.get("pixel_values_videos")
        if pixels is None:
            return torch.zeros(0, 3, dtype=torch.long)
        vc = self.model.config.vision_config
        side = math.ceil((vc.image_size // vc.patch_size) / 2)
        coords, frame0 = [], 0
        for _ in range(pixels.shape[0]):
            t = pixels.shape[1]
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(side), torch.arange(side), indexing="ij"), -1)
            coords += [grid.view(-1, 3) + torch.tensor([frame0, 0, 0]), torch.tensor([[frame0 + t, 0, 0]])]
            frame0 += t + 1
        return torch.cat(coords)

    # -- prefill hooks ------------------------------------------------------------------------
    def token_types(self, inputs: dict[str, Any]) -> torch.Tensor:  # [S], from the placeholder token ids
        ids = inputs["input_ids"][0]
        types = torch.full_like(ids, TEXT)
        types[ids == self.image_token_id] = IMAGE
        types[ids == self.video_token_id] = VIDEO
        return types

    def prompt_positions(self, inputs: dict[str, Any], types: torch.Tensor) -> tuple[torch.Tensor, int]:
        s = inputs["input_ids"].shape[1]
        return torch.arange(s, device=inputs["input_ids"].device).view(1, s), 0  # [1, S]

    def visual_features(self, inputs: dict[str, Any]) -> VisualFeatures:
        """This model's own projected (pooled) image and video features."""
        inner = self.model.model
        features = VisualFeatures()
        if inputs.get("pixel_values") is not None:
            out = inner.get_image_features(inputs["pixel_values"], inputs.get("image_sizes"),
                                           batch_num_images=inputs.get("batch_num_images"), return_dict=True)
            features.image = feature_rows(out.pooler_output)
        if inputs.get("pixel_values_videos") is not None:
            features.video = feature_rows(inner.get_video_features(inputs["pixel_values_videos"], return_dict=True).pooler_output)
        return features
