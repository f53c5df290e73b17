"""What differs between the testbed's model families: prompts, video tensors, model, checkpoint.

The training loop (``train.py``) and the checkpoint materialiser (``checkpoints.py``) are the same
for both; a :class:`Family` supplies the rest:

* ``qwen2_5_vl``: ``Qwen2_5_VLForConditionalGeneration`` (tied embeddings), Qwen2.5-VL chat
  template, ``pixel_values_videos`` from the Qwen2-VL video processor (8 frames of 112x112 ->
  4 x 8 x 8 patches, 64 merged video tokens), multimodal RoPE inputs.
* ``llava_onevision``: ``LlavaOnevisionForConditionalGeneration`` (Qwen2 text model with untied
  embeddings, SigLIP vision tower), the llava-hf tokenizer layout and chat template, frames from
  the LLaVA-OneVision video processor (8 x 3 x 112 x 112 -> 8 x 4 x 4 pooled tokens + 1 newline).
* ``qwen3_vl``: ``Qwen3VLForConditionalGeneration`` (tied embeddings, q/k-norm attention, DeepStack),
  the Qwen3 tokenizer and chat template with lmms-eval's system turn, frames resized to 96x96 as
  qwen_vl_utils does and patched at 16 px (4 x 6 x 6 patches, 36 merged tokens in four timestamped slices).

Every prompt is built the way evaluation builds it (the chat template of the saved checkpoint, the
video placeholder expanded to the processor's token count), so a trained model sees the same
token sequence in training and in an lmms-eval run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

FRAMES = 8
IMAGE_SIZE = 112


class Family:
    name: str
    video_token: str
    special_tokens: tuple[str, ...]
    #: shape of one clip's video tensor as stored in the training cache
    pixel_shape: tuple[int, ...]
    #: number of video placeholder tokens of one clip in the prompt
    video_tokens: int
    #: parameter-name fragments of the vision tower and projector (trained at RoleSpec.vision_lr_scale x the text lr)
    vision_params: tuple[str, ...]
    #: prefix of the cached training tensors (``data-v*/<prefix><split>-<n>.f16``)
    cache_prefix: str

    # -- tokenizer and prompt ------------------------------------------------------------------
    def tokenizer(self) -> Any:
        raise NotImplementedError

    def chat_scaffold(self, tokenizer: Any) -> tuple[str, str]:
        """(text before the question, text after it) with the video placeholder expanded."""
        raise NotImplementedError

    # -- video -----------------------------------------------------------------------------------
    def encode(self, frames: Any) -> Any:
        """One clip's uint8 frames (T, H, W, 3) -> float array of :attr:`pixel_shape`."""
        raise NotImplementedError

    def batch_inputs(self, pixels: Any, b: int) -> dict[str, Any]:
        """Model inputs for ``b`` clips' cached tensors (besides input_ids / attention_mask)."""
        raise NotImplementedError

    def token_type_inputs(self, input_ids: Any, video_id: int) -> dict[str, Any]:
        return {}

    def video_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        """The projected video features the language model receives: [clips, tokens, hidden]."""
        raise NotImplementedError

    # -- model -----------------------------------------------------------------------------------
    def config(self, spec: Any, vocab_size: int, token_ids: dict[str, int] | None) -> Any:
        raise NotImplementedError

    def model_class(self) -> Any:
        raise NotImplementedError

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        raise NotImplementedError

    def vision_parameters(self, model: Any) -> list[Any]:
        """The vision tower's and projector's parameters (trained at their own lr, and alone in
        vision pre-training)."""
        return [p for n, p in model.named_parameters() if any(v in f".{n}" for v in self.vision_params)]

    def embedding_keys(self, state: dict[str, Any]) -> list[str]:
        """Vocabulary-sized matrices in a reduced state dict (expanded to the full vocabulary)."""
        return [k for k in state if k.endswith("embed_tokens.weight") or k == "lm_head.weight"]

    def save(self, model: Any, out: Any, meta: dict[str, Any]) -> Any:
        raise NotImplementedError


class QwenFamily(Family):
    name = "qwen2_5_vl"
    video_token = "<|video_pad|>"
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
                      "<|video_pad|>", "<|image_pad|>")
    patches = 256  # 8 frames of 112x112: 4 temporal x 8 x 8 patches of 14 px
    patch_dim = 1176  # 3 channels x 2 frames x 14 x 14
    grid_thw = (4, 8, 8)
    seconds_per_grid = 0.25  # temporal patch of 2 frames at 8 fps
    pixel_shape = (patches, patch_dim)
    video_tokens = patches // 4
    vision_params = (".visual.",)
    cache_prefix = ""
    video_args = {"min_pixels": 3136, "max_pixels": 12544}
    full_vocab = 151936

    def tokenizer(self) -> Any:
        from testbed.fixtures.tiny import QWEN2_5_VL_CHAT_TEMPLATE, qwen_tokenizer

        tok = qwen_tokenizer()
        tok.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
        return tok

    def chat_scaffold(self, tokenizer: Any) -> tuple[str, str]:
        msgs = [{"role": "user", "content": [{"type": "video", "video": "x.mp4"}, {"type": "text", "text": "q"}]}]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        head, tail = text.split("q<|im_end|>")
        video = "<|vision_start|>" + self.video_token * self.video_tokens + "<|vision_end|>"
        return head.replace("<|vision_start|><|video_pad|><|vision_end|>", video), "<|im_end|>" + tail

    def processor(self) -> Any:
        from transformers import Qwen2VLVideoProcessor

        return Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16384, patch_size=14,
                                     temporal_patch_size=2, merge_size=2)

    def encode(self, frames: Any, processor: Any = None) -> Any:
        import torch

        proc = processor or self.processor()
        pv = proc(videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], return_tensors="pt", **self.video_args)
        if tuple(pv["video_grid_thw"][0].tolist()) != self.grid_thw:
            raise RuntimeError(f"unexpected video grid {pv['video_grid_thw'].tolist()}; expected {self.grid_thw}")
        return pv["pixel_values_videos"].numpy()

    def batch_inputs(self, pixels: Any, b: int) -> dict[str, Any]:
        import torch

        return {
            "pixel_values_videos": torch.from_numpy(pixels.reshape(b * self.patches, self.patch_dim).astype("float32")),
            "video_grid_thw": torch.tensor([self.grid_thw] * b),
            "second_per_grid_ts": torch.tensor([self.seconds_per_grid] * b),
        }

    def token_type_inputs(self, input_ids: Any, video_id: int) -> dict[str, Any]:
        return {"mm_token_type_ids": (input_ids == video_id).long() * 2}

    def video_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        import torch

        out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
        return torch.stack(list(out.pooler_output))

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        from testbed.fixtures.tiny import QWEN_VISION_IDS

        return dict(QWEN_VISION_IDS, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)

    def config(self, spec: Any, vocab_size: int, token_ids: dict[str, int] | None) -> Any:
        from testbed.fixtures.tiny import tiny_qwen2_5_vl_config

        return tiny_qwen2_5_vl_config(hidden=spec.hidden, layers=spec.layers, vision_hidden=spec.vision_hidden,
                                      vision_depth=spec.vision_depth, vocab_size=vocab_size, init_std=0.02,
                                      intermediate=spec.intermediate, token_ids=token_ids)

    def model_class(self) -> Any:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def save(self, model: Any, out: Any, meta: dict[str, Any]) -> Any:
        from testbed.fixtures.tiny import save_qwen2_5_vl_checkpoint

        return save_qwen2_5_vl_checkpoint(model, out, meta)


class Qwen3VLFamily(QwenFamily):
    """Qwen3-VL: ``Qwen3VLForConditionalGeneration`` (tied embeddings, DeepStack), the Qwen3 tokenizer and
    chat template, frames resized as qwen_vl_utils resizes them for the evaluation (112x112 -> 96x96 at
    the testbed's pixel bounds: multiples of 32) and patched by the Qwen3-VL video processor (4 x 6 x 6
    patches of 16 px, 36 merged video tokens), the system turn and per-slice timestamps the processor
    writes for an 8-frame clip at 8 fps, as lmms-eval's qwen3_vl (and ``lvspec_qwen3_vl``) builds it."""

    name = "qwen3_vl"
    patches = 144  # 8 frames of 96x96: 4 temporal x 6 x 6 patches of 16 px
    patch_dim = 1536  # 3 channels x 2 frames x 16 x 16
    grid_thw = (4, 6, 6)
    pixel_shape = (patches, patch_dim)
    video_tokens = patches // 4
    cache_prefix = "qwen3_vl-"

    def tokenizer(self) -> Any:
        from testbed.fixtures.tiny_qwen3 import qwen3_tokenizer

        return qwen3_tokenizer()

    def chat_scaffold(self, tokenizer: Any) -> tuple[str, str]:
        """The prompt the real processor writes for one testbed clip (system turn, `<t seconds>` and
        a `<|vision_start|>...<|vision_end|>` block per temporal slice), split around the question."""
        import torch

        from lvspec_eval.adapters.qwen3_vl import SYSTEM_PROMPT
        from testbed import clips

        from testbed.fixtures.tiny_qwen3 import tiny_qwen3_vl_processor

        processor = tiny_qwen3_vl_processor()  # the real Qwen3 tokenizer and chat template, as saved checkpoints
        msgs = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": [{"type": "video", "video": "x.mp4"}, {"type": "text", "text": "q"}]}]
        text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        side = self.grid_thw[1] * 16
        video = torch.zeros(clips.FRAMES, 3, side, side)
        metadata = {"fps": float(clips.FPS), "frames_indices": list(range(clips.FRAMES)),
                    "total_num_frames": clips.FRAMES}
        ids = processor(text=[text], videos=[video], video_metadata=[metadata], do_resize=False,
                        do_sample_frames=False, return_tensors="pt")["input_ids"][0]
        head, tail = processor.tokenizer.decode(ids).split("q<|im_end|>")
        if tokenizer.get_vocab() != processor.tokenizer.get_vocab():
            raise ValueError("chat_scaffold needs the Qwen3 tokenizer (Qwen3VLFamily.tokenizer())")
        return head, "<|im_end|>" + tail

    def processor(self) -> Any:
        from testbed.fixtures.tiny_qwen3 import qwen3_vl_video_processor

        return qwen3_vl_video_processor()

    def encode(self, frames: Any, processor: Any = None) -> Any:
        """As the evaluation: qwen_vl_utils' resize (smart_resize to multiples of 32 within the testbed's
        pixel bounds, bicubic, antialiased, to float), then the video processor without resizing."""
        import torch
        from qwen_vl_utils.vision_process import smart_resize
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        h, w = smart_resize(video.shape[2], video.shape[3], factor=32, **self.video_args)
        video = TF.resize(video, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()
        proc = processor or self.processor()
        metadata = {"fps": 8.0, "frames_indices": list(range(video.shape[0])), "total_num_frames": video.shape[0]}
        pv = proc(videos=[video], video_metadata=[metadata], do_resize=False, do_sample_frames=False,
                  return_tensors="pt")
        if tuple(pv["video_grid_thw"][0].tolist()) != self.grid_thw:
            raise RuntimeError(f"unexpected video grid {pv['video_grid_thw'].tolist()}; expected {self.grid_thw}")
        return pv["pixel_values_videos"].numpy()

    def batch_inputs(self, pixels: Any, b: int) -> dict[str, Any]:
        import torch

        return {"pixel_values_videos": torch.from_numpy(pixels.reshape(b * self.patches, self.patch_dim).astype("float32")),
                "video_grid_thw": torch.tensor([self.grid_thw] * b)}

    def config(self, spec: Any, vocab_size: int, token_ids: dict[str, int] | None) -> Any:
        from testbed.fixtures.tiny_qwen3 import tiny_qwen3_vl_config

        head_dim = 64 if spec.hidden >= 256 else 32
        heads = max(1, spec.hidden // head_dim)
        return tiny_qwen3_vl_config(hidden=spec.hidden, layers=spec.layers, heads=heads, kv_heads=max(1, heads // 2),
                                    head_dim=head_dim, vision_hidden=spec.vision_hidden, vision_depth=spec.vision_depth,
                                    deepstack=tuple(range(max(1, spec.vision_depth - 1))), vocab_size=vocab_size,
                                    init_std=0.02, intermediate=spec.intermediate, tie_embeddings=True,
                                    token_ids=token_ids)

    def model_class(self) -> Any:
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    def save(self, model: Any, out: Any, meta: dict[str, Any]) -> Any:
        from testbed.fixtures.tiny_qwen3 import save_qwen3_vl_checkpoint

        return save_qwen3_vl_checkpoint(model, out, meta)


class LlavaOnevisionFamily(Family):
    name = "llava_onevision"
    video_token = "<video>"
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<video>")
    pixel_shape = (FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    video_tokens = FRAMES * (IMAGE_SIZE // 28) ** 2 + 1  # 2x2-pooled patches per frame, one newline per video
    vision_params = ("vision_tower.", "multi_modal_projector.")
    cache_prefix = "llava_onevision-"

    def tokenizer(self) -> Any:
        from testbed.fixtures.tiny import qwen_tokenizer
        from testbed.fixtures.tiny_llava import LLAVA_ONEVISION_CHAT_TEMPLATE

        tok = qwen_tokenizer(layout="llava_onevision")
        tok.chat_template = LLAVA_ONEVISION_CHAT_TEMPLATE
        return tok

    def chat_scaffold(self, tokenizer: Any) -> tuple[str, str]:
        # as the backend (and lmms-eval's llava_hf) builds it: "<video>\n" + question as plain string content
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"{self.video_token}\nq"}], tokenize=False,
                                             add_generation_prompt=True)
        head, tail = text.split("q<|im_end|>")
        return head.replace(self.video_token, self.video_token * self.video_tokens), "<|im_end|>" + tail

    def processor(self) -> Any:
        from transformers import LlavaOnevisionVideoProcessor

        return LlavaOnevisionVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})

    def encode(self, frames: Any, processor: Any = None) -> Any:
        proc = processor or self.processor()
        pv = proc(videos=[frames], return_tensors="pt")["pixel_values_videos"][0]
        if tuple(pv.shape) != self.pixel_shape:
            raise RuntimeError(f"unexpected video tensor {tuple(pv.shape)}; expected {self.pixel_shape}")
        return pv.numpy()

    def batch_inputs(self, pixels: Any, b: int) -> dict[str, Any]:
        import torch

        return {"pixel_values_videos": torch.from_numpy(pixels.reshape(b, *self.pixel_shape).astype("float32"))}

    def video_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        pixels = inputs["pixel_values_videos"]
        out = model.model.get_video_features(pixels, return_dict=True).pooler_output
        return out.reshape(pixels.shape[0], -1, out.shape[-1])

    def special_ids(self, tokenizer: Any) -> dict[str, int]:
        from testbed.fixtures.tiny_llava import IMAGE_TOKEN_ID, VIDEO_TOKEN_ID

        return {"image_token_id": IMAGE_TOKEN_ID, "video_token_id": VIDEO_TOKEN_ID, "bos_token_id": 151643,
                "eos_token_id": 151645, "pad_token_id": 151643}

    def config(self, spec: Any, vocab_size: int, token_ids: dict[str, int] | None) -> Any:
        from testbed.fixtures.tiny_llava import tiny_llava_onevision_config

        return tiny_llava_onevision_config(hidden=spec.hidden, layers=spec.layers, vision_hidden=spec.vision_hidden,
                                           vision_layers=spec.vision_depth, image_size=IMAGE_SIZE,
                                           vocab_size=vocab_size, init_std=0.02, intermediate=spec.intermediate,
                                           token_ids=token_ids)

    def model_class(self) -> Any:
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration

    def save(self, model: Any, out: Any, meta: dict[str, Any]) -> Any:
        from transformers import GenerationConfig

        from testbed.fixtures.tiny import save_checkpoint
        from testbed.fixtures.tiny_llava import tiny_llava_onevision_processor

        model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
                                                   do_sample=False)
        return save_checkpoint(out, model, tiny_llava_onevision_processor(IMAGE_SIZE, model.config), meta)


def tied_embeddings(config: Any) -> bool:
    """Whether the output layer shares the input embedding (declared on the composite config in
    Qwen2.5-VL, on the text config in LLaVA-OneVision)."""
    if hasattr(config, "tie_word_embeddings"):
        return bool(config.tie_word_embeddings)
    return bool(getattr(config.get_text_config(), "tie_word_embeddings", False))


FAMILIES: dict[str, Family] = {f.name: f for f in (QwenFamily(), LlavaOnevisionFamily(), Qwen3VLFamily())}


class Pair(NamedTuple):
    """A trained testbed pair as lmms-eval runs it."""

    model: str  # lmms-eval --model
    target: str  # testbed role of the target
    drafter: str  # testbed role of the drafter
    described: str


#: The trained pairs by their command-line name (``--family``).
PAIRS: dict[str, Pair] = {
    "qwen": Pair("lvspec_qwen", "target", "drafter", "Qwen2.5-VL architecture, full Qwen vocabulary"),
    "llava_ov": Pair("lvspec_llava_ov", "llava_target", "llava_drafter",
                     "LLaVA-OneVision architecture, full Qwen2 vocabulary, drafter embedding padded further"),
    "qwen3_vl": Pair("lvspec_qwen3_vl", "qwen3_target", "qwen3_drafter",
                     "Qwen3-VL architecture with DeepStack, full Qwen3 vocabulary"),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown testbed family {name!r}; use one of {list(FAMILIES)}")
    return FAMILIES[name]
