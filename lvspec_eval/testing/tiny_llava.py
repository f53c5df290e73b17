"""Tiny random LLaVA-OneVision checkpoints (real architecture, real Qwen2 vocabulary), offline.

:func:`build_tiny_llava_onevision` writes a ``LlavaOnevisionForConditionalGeneration`` with a tiny
Qwen2 text model and a tiny SigLIP vision tower, plus its processor (image and video processors,
the llava-hf LLaVA-OneVision tokenizer layout, a chat template), so that
``from_pretrained(path)`` loads it exactly like a hub checkpoint, and lmms-eval's built-in
``llava_hf`` backend runs on it.

Heavy libraries (torch, transformers) are imported inside the function.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvspec_eval.testing.tiny import checkpoint_complete, qwen_tokenizer, save_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["LLAVA_ONEVISION_CHAT_TEMPLATE", "build_tiny_llava_onevision", "tiny_llava_onevision_config",
           "tiny_llava_onevision_processor"]

#: The llava-hf LLaVA-OneVision chat template (images, then videos, then text per message), with
#: one addition: a message whose content is a plain string is rendered as-is. lmms-eval's simple
#: ``llava_hf`` backend sends string content ("<video>\\n" + question), so without that branch its
#: prompt would lose the question and the video placeholder.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% endif %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

IMAGE_TOKEN_ID = 151646
VIDEO_TOKEN_ID = 151647


def build_tiny_llava_onevision(
    out_dir: Path,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    vision_hidden: int = 32,
    vision_layers: int = 1,
    image_size: int = 112,
    vocab_size: int = 151936,
    dtype: torch.dtype | None = None,
    init_std: float = 0.3,
) -> Path:
    """Write a random-init LLaVA-OneVision checkpoint with processor and tokenizer to ``out_dir``.

    Text model: Qwen2 with ``hidden // 16`` heads (head_dim 16), half as many KV heads, untied
    embeddings (as the 7B/72B models), ``vocab_size`` rows (LLaVA-OneVision pads its embedding
    beyond the 151648 tokenizer entries; 0.5B/7B/72B differ, so vary it to test padding). Vision:
    SigLIP, patch 14, ``image_size`` pixels (112: 8x8 patches, pooled to 4x4 = 16 tokens a frame).
    ``init_std`` as in :func:`lvspec_eval.testing.tiny.build_tiny_qwen2_5_vl` (diverse greedy text).
    Weights are drawn under ``torch.manual_seed(seed)`` (the caller's RNG state is restored);
    float32 unless ``dtype``. Idempotent and safe for concurrent callers (marker written last).
    """
    out_dir = Path(out_dir)
    if checkpoint_complete(out_dir):
        return out_dir

    import torch
    from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration

    dtype = torch.float32 if dtype is None else dtype
    config = tiny_llava_onevision_config(hidden=hidden, layers=layers, vision_hidden=vision_hidden,
                                         vision_layers=vision_layers, image_size=image_size, vocab_size=vocab_size,
                                         init_std=init_std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config).to(dtype).eval()
        # image_newline is drawn at std 1/sqrt(hidden) by default; keep it on the scale of the rest
        with torch.no_grad():
            model.model.image_newline.normal_(0.0, init_std)
    model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
                                               do_sample=False)
    processor = tiny_llava_onevision_processor(image_size, config)
    info = {"family": "llava_onevision", "seed": seed, "hidden": hidden, "layers": layers,
            "vision_hidden": vision_hidden, "vision_layers": vision_layers, "image_size": image_size,
            "vocab_size": vocab_size, "dtype": str(dtype), "init_std": init_std}
    return save_checkpoint(out_dir, model, processor, info)


def tiny_llava_onevision_config(hidden: int = 64, layers: int = 2, vision_hidden: int = 32, vision_layers: int = 1,
                                image_size: int = 112, vocab_size: int = 151936, init_std: float = 0.3,
                                intermediate: int | None = None, token_ids: dict[str, int] | None = None) -> Any:
    """The ``LlavaOnevisionConfig`` of :func:`build_tiny_llava_onevision` (``token_ids`` overrides the
    special ids: ``image_token_id``, ``video_token_id``, ``bos_token_id``, ``eos_token_id``,
    ``pad_token_id``, e.g. for a model trained on a reduced vocabulary)."""
    from transformers import LlavaOnevisionConfig

    if image_size % 28:
        raise ValueError(f"image_size={image_size} must be a multiple of 28 (patch 14, 2x2 pooling)")
    ids = {"image_token_id": IMAGE_TOKEN_ID, "video_token_id": VIDEO_TOKEN_ID, "bos_token_id": 151643,
           "eos_token_id": 151645, "pad_token_id": 151643}
    ids.update(token_ids or {})
    heads = max(1, hidden // 16)
    config = LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": intermediate or 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "initializer_range": init_std,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
            "tie_word_embeddings": False,
            "bos_token_id": ids["bos_token_id"],
            "eos_token_id": ids["eos_token_id"],
            "pad_token_id": ids["pad_token_id"],
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": max(1, vision_hidden // 16),
            "patch_size": 14,
            "image_size": image_size,
            "vision_use_head": False,
        },
        image_token_index=ids["image_token_id"],
        video_token_index=ids["video_token_id"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size],
                              [2 * image_size, 2 * image_size]],
        tie_word_embeddings=False,
    )
    config.initializer_range = init_std
    return config


def tiny_llava_onevision_processor(image_size: int, config: Any) -> Any:
    """Image + video processors at ``image_size``, the llava-hf LLaVA-OneVision tokenizer layout and
    chat template (:data:`LLAVA_ONEVISION_CHAT_TEMPLATE`)."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    tokenizer = qwen_tokenizer(layout="llava_onevision")
    tokenizer.chat_template = LLAVA_ONEVISION_CHAT_TEMPLATE
    size = {"height": image_size, "width": image_size}
    patches = image_size // 14
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=config.image_grid_pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=patches * patches,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
