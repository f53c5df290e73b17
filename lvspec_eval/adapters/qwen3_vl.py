"""Qwen3-VL, dense (`Qwen3VLForConditionalGeneration`: 2B/4B/8B/32B) and MoE
(`Qwen3VLMoeForConditionalGeneration`: 30B-A3B, 235B-A22B), in any target/drafter pairing.

Inputs are built exactly as lmms-eval's built-in chat `qwen3_vl` (0.7.3) builds them, so that
`method=ar` returns its text. The family's quirks, each handled here:

- **Model class from the checkpoint's config** (`model_type` qwen3_vl / qwen3_vl_moe), never from
  the name: the built-in picks MoE only for paths matching `A\\d+B` and otherwise loads a MoE
  checkpoint silently into the dense class with random MLPs. Qwen3.5 (`model_type` qwen3_5*,
  hybrid Gated-DeltaNet linear-attention layers) is refused before any weights load: a rejected
  draft would need a recurrent-state rollback, not a KV-cache crop. Other families are refused too.
- **Prompt**: a system turn "You are a helpful assistant." is always prepended (the Qwen3-VL chat
  template has no default one; the built-in adds it), `qwen_vl_utils.process_vision_info(...,
  image_patch_size=16, return_video_metadata=True)` samples `max_num_frames` frames (`nframes`,
  fixed; or `fps` with `max_frames`), and the processor gets the video metadata, the built-in's
  video kwargs and `do_resize=False`.
- **Timestamps are text**: the processor writes `<t seconds>` before each temporal slice (two
  frames), from the metadata's frame indices and fps (24 when the fps is unknown). The drafter
  decodes on the target's processor output, so both see the same metadata and the same ids
  (transformers 5.24 keeps the template's own `<|vision_start|>` / `<|vision_end|>` around the
  per-slice blocks: a doubled marker at both ends, as in the built-in).
- **A clip shorter than `max_num_frames`**: the built-in fails (qwen_vl_utils refuses more frames
  than the clip has); here the frame count drops to the largest even count the clip holds.
- **Interleaved M-RoPE**: positions from the model's own `get_rope_index` (every frame's tokens at
  the temporal position of the text before it); every forward gets explicit position ids
  (`QwenSession`: cache length + this sample's rope delta, kept on the session). The model caches
  `model.model.rope_deltas` between calls and reuses it when set; it is reset at every prefill
  and never read.
- **DeepStack**: features of some vision blocks are added to the hidden states of the first
  text layers at the visual positions (prefill only; decode steps carry no visual tokens). A
  pruned prefill (SpecVLM, Self-SD, `draft_video_keep < 1`) feeds the kept rows only, with the
  visual position mask and every DeepStack layer's features cut to the same rows, each kept
  token at its original position.
- **Attention probes**: Qwen3 attention normalises q and k per head (RMSNorm) before rotary;
  `project_qk` applies `q_norm` / `k_norm` so the relevance and pruning probes read the
  attention the layer computes.
- **Stop semantics** (the backend's): greedy whatever the checkpoint's generation_config says
  (Instruct checkpoints ship sampling defaults), EOS only (`<|im_end|>`), task `until` ignored.
- **MoE**: routing is per token, so block and step forwards agree and the speculative loop
  needs nothing special.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch

from lvspec_eval.adapters.loading import CheckpointError, check_checkpoint, load_pretrained, looks_local, resolve_dtype
from lvspec_eval.adapters.qwen2_5_vl import QwenSession, QwenVLAdapter, count_frames

#: lmms-eval's qwen3_vl system turn (its `system_prompt` default).
SYSTEM_PROMPT = "You are a helpful assistant."
#: Vision patch size of every Qwen3-VL checkpoint (qwen_vl_utils `image_patch_size`).
PATCH_SIZE = 16
#: Supported `model_type`s and their model classes.
MODEL_CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration"}
#: What the drafter must share with the target to read the target's processor output.
_SHARED_VISION = ("patch_size", "temporal_patch_size", "spatial_merge_size")
_SHARED_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


class UnsupportedCheckpointError(ValueError):
    """A checkpoint that `lvspec_qwen3_vl` cannot decode (another family, Qwen3.5, a drafter that
    reads video differently); the message names the checkpoint and the fix."""


def checkpoint_config(path: str, role: str) -> dict[str, Any]:
    """The raw config.json of a checkpoint (local folder or cached hub name), no weights."""
    from transformers import PretrainedConfig

    check_checkpoint(path, role)
    try:
        config, _ = PretrainedConfig.get_config_dict(str(Path(path).expanduser()) if looks_local(path) else path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config of {role} checkpoint {path!r}: {exc}") from exc
    return config


def model_class_name(config: dict[str, Any], path: str, role: str) -> str:
    """The model class of a Qwen3-VL config, or a clear refusal of anything else."""
    model_type = config.get("model_type")
    if model_type in MODEL_CLASSES:
        return MODEL_CLASSES[model_type]
    text = config.get("text_config") or config
    layer_types = list(text.get("layer_types") or [])
    if str(model_type).startswith("qwen3_5") or "linear_attention" in layer_types:
        linear = sum(t == "linear_attention" for t in layer_types)
        raise UnsupportedCheckpointError(
            f"{role} checkpoint {path!r} is a Qwen3.5 model (model_type {model_type!r}"
            + (f", {linear} of {len(layer_types)} layers linear attention" if layer_types else "")
            + "): its Gated DeltaNet layers keep a recurrent state that a rejected draft cannot roll back by "
            "cropping the KV cache, so speculative decoding would change its outputs. lvspec_qwen3_vl decodes "
            "Qwen3-VL checkpoints (dense or MoE), e.g. Qwen/Qwen3-VL-8B-Instruct; Qwen3.5 is not supported yet")
    raise UnsupportedCheckpointError(
        f"{role} checkpoint {path!r} is a {model_type!r} model, not Qwen3-VL (model_type qwen3_vl or qwen3_vl_moe). "
        "lvspec_qwen3_vl pairs Qwen3-VL targets with Qwen3-VL drafters (e.g. Qwen/Qwen3-VL-4B-Instruct); use "
        "lvspec_qwen for Qwen2.5-VL and lvspec_llava_ov for LLaVA-OneVision")


def check_checkpoints(target: str, draft: Optional[str]) -> None:
    """Refuse, before any weights load, a target or drafter that is not Qwen3-VL, and a drafter that
    cannot read the target's video inputs (other patch geometry or vision token ids). `draft`: None
    when nothing drafts or the target drafts for itself."""
    t_cfg = checkpoint_config(target, "target")
    model_class_name(t_cfg, target, "target")
    if draft is None:
        return
    d_cfg = checkpoint_config(draft, "drafter")
    model_class_name(d_cfg, draft, "drafter")
    diffs = [f"{k} {t_cfg.get(k)} vs {d_cfg.get(k)}" for k in _SHARED_IDS if t_cfg.get(k) != d_cfg.get(k)]
    tv, dv = t_cfg.get("vision_config") or {}, d_cfg.get("vision_config") or {}
    diffs += [f"vision {k} {tv.get(k)} vs {dv.get(k)}" for k in _SHARED_VISION if tv.get(k) != dv.get(k)]
    if diffs:
        raise UnsupportedCheckpointError(
            f"drafter {draft!r} reads video differently from target {target!r} ({'; '.join(diffs)}): the drafter "
            "decodes on the target's processor output, so both need the same vision patching and token ids; "
            "pick a drafter of the same Qwen3-VL release")


def greedy_deviations(generation_config: Any) -> list[str]:
    """Settings of a checkpoint's generation_config that `generate(do_sample=False)` (lmms-eval's
    built-in) still applies and a plain argmax (lvspec) does not: empty for the hub's Qwen3-VL."""
    found = []
    penalty = getattr(generation_config, "repetition_penalty", None)
    if penalty not in (None, 1.0):
        found.append(f"repetition_penalty={penalty}")
    for name in ("no_repeat_ngram_size", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                 "forced_bos_token_id", "forced_eos_token_id", "min_new_tokens", "sequence_bias"):
        if getattr(generation_config, name, None):
            found.append(f"{name}={getattr(generation_config, name)}")
    if (getattr(generation_config, "min_length", 0) or 0) > 0:
        found.append(f"min_length={generation_config.min_length}")
    return found


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL dense or MoE (see the module docstring for the family's quirks)."""

    session_class = QwenSession

    def __init__(self, model, processor, name: str, *, max_num_frames: int = 32, fps: Optional[float] = None,
                 min_pixels: int = 256 * 28 * 28, max_pixels: int = 1605632, system_prompt: str = SYSTEM_PROMPT):
        super().__init__(model, processor, name, max_num_frames=max_num_frames, fps=fps, min_pixels=min_pixels,
                         max_pixels=max_pixels)
        self.system_prompt = system_prompt

    @classmethod
    def load(cls, path: str, *, dtype: str = "bfloat16", device_map: Any = "cpu",
             attn_implementation: Optional[str] = None, offload_folder: Optional[str] = None,
             **video_args: Any) -> "Qwen3VLAdapter":
        """Load by the class the checkpoint's config names (dense or MoE) and the processor as the
        built-in does (`AutoProcessor.from_pretrained(path, max_pixels=..., min_pixels=...)`)."""
        import transformers
        from transformers import AutoProcessor

        model_class = getattr(transformers, model_class_name(checkpoint_config(path, "model"), path, "model"))
        model = load_pretrained(model_class, path, dtype=resolve_dtype(dtype), device_map=device_map,
                                attn_implementation=attn_implementation, offload_folder=offload_folder)
        processor = AutoProcessor.from_pretrained(
            str(Path(path).expanduser()) if looks_local(path) else path,
            max_pixels=video_args.get("max_pixels", 1605632), min_pixels=video_args.get("min_pixels", 256 * 28 * 28))
        return cls(model, processor, path, **video_args)

    # -- inputs -------------------------------------------------------------------------------
    def builtin_video_kwargs(self) -> dict[str, Any]:
        """lmms-eval qwen3_vl's `_build_video_kwargs` (no `total_pixels`): pixel bounds, and `nframes`
        = max_num_frames, or `fps` with `max_frames` = max_num_frames."""
        kwargs: dict[str, Any] = {"min_pixels": self.min_pixels}
        if self.fps is not None:
            kwargs.update(fps=self.fps, max_frames=self.max_num_frames)
        else:
            kwargs["nframes"] = self.max_num_frames
        kwargs["max_pixels"] = self.max_pixels
        return kwargs

    def video_kwargs(self, video_paths: list[str]) -> dict[str, Any]:
        """The per-video kwargs of the built-in; `nframes` drops to the largest even frame count of a
        clip shorter than max_num_frames (where the built-in fails)."""
        kwargs = self.builtin_video_kwargs()
        if "nframes" in kwargs and video_paths:
            kwargs["nframes"] = self.frames_for(video_paths[0])
        return kwargs

    def frames_for(self, video_path: str) -> int:
        total = count_frames(video_path)
        if total < 2:
            raise ValueError(f"video {video_path!r} has {total} frame; Qwen3-VL samples frames in pairs, give a "
                             "video of at least 2 frames")
        wanted = 2 * round(self.max_num_frames / 2)  # qwen_vl_utils rounds nframes to an even count
        return wanted if wanted <= total else (total // 2) * 2

    def prepare(self, hf_messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Processor inputs for one chat, as lmms-eval's chat `qwen3_vl` builds them (system turn first,
        video metadata, do_resize=False, batch size 1)."""
        from qwen_vl_utils import process_vision_info

        messages = [{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]}, *hf_messages]
        batched = [messages]
        texts = self.processor.apply_chat_template(batched, tokenize=False, add_generation_prompt=True)
        images, videos, vision_kwargs = process_vision_info(batched, return_video_kwargs=True,
                                                            image_patch_size=PATCH_SIZE, return_video_metadata=True)
        metadata = None
        if videos is not None:
            videos, metadata = (list(x) for x in zip(*videos))
        kwargs = {**self.builtin_video_kwargs(), **vision_kwargs}
        return dict(self.processor(text=texts, images=images, videos=videos, video_metadata=metadata, **kwargs,
                                   do_resize=False, return_tensors="pt"))

    # -- attention probes -----------------------------------------------------------------------
    def project_qk(self, attn: torch.nn.Module, hidden: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen3 attention: per-head RMSNorm of q and k (`q_norm`, `k_norm`) before rotary."""
        s = hidden.shape[1]
        q = attn.q_norm(attn.q_proj(hidden).view(1, s, -1, head_dim)).transpose(1, 2)  # [1, h, S, D]
        k = attn.k_norm(attn.k_proj(hidden).view(1, s, -1, head_dim)).transpose(1, 2)  # [1, kvh, S, D]
        return q, k

    # -- prefill ------------------------------------------------------------------------------
    def start(self, inputs: dict[str, Any], capture_layer: Optional[int] = None,
              attention_layer: Optional[int] = None) -> tuple[QwenSession, Any]:
        """As `QwenVLAdapter.start` (explicit M-RoPE ids, rope delta on the session); the rope delta the
        model caches on itself is cleared first, so nothing of an earlier sample or call survives."""
        self.model.model.rope_deltas = None
        return super().start(inputs, capture_layer=capture_layer, attention_layer=attention_layer)

    def deepstack_inputs(self, inputs: dict[str, Any], embeds: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """What Qwen3-VL's own forward builds from the pixels, for a prefill that feeds embeddings:
        (embeds [1, S, H] with the visual features scattered in, visual_pos_masks [1, S] bool,
        DeepStack features per injected layer [Nvis, H] in prompt order, visual features [video, image])."""
        inner = self.model.model
        input_ids = inputs["input_ids"]  # [1, S]
        masks = {"image": input_ids == self.model.config.image_token_id,
                 "video": input_ids == self.model.config.video_token_id}
        visual_mask = masks["image"] | masks["video"]  # [1, S]
        n_visual = int(visual_mask.sum())
        deepstack: list[torch.Tensor] = []
        pooled: dict[str, torch.Tensor] = {}
        for kind, pixels, grid in (("image", inputs.get("pixel_values"), inputs.get("image_grid_thw")),
                                   ("video", inputs.get("pixel_values_videos"), inputs.get("video_grid_thw"))):
            if pixels is None:
                continue
            out = inner.get_image_features(pixels, grid, return_dict=True)  # the video path is the same
            feats = torch.cat(list(out.pooler_output), 0)  # [N_kind, H]
            embeds = embeds.masked_scatter(masks[kind].unsqueeze(-1), feats.to(embeds.device, embeds.dtype))
            pooled[kind] = feats
            at = masks[kind][visual_mask]  # [Nvis] rows of this kind among the visual positions
            for layer, layer_feats in enumerate(out.deepstack_features):
                layer_feats = torch.cat(list(layer_feats), 0)  # [N_kind, H]
                if layer == len(deepstack):
                    deepstack.append(layer_feats.new_zeros(n_visual, layer_feats.shape[-1]))
                deepstack[layer][at.to(layer_feats.device)] = layer_feats
        visual = [pooled[k] for k in ("video", "image") if k in pooled]
        return embeds, visual_mask, deepstack, visual

    def _prefill_rows(self, inputs: dict[str, Any], types: torch.Tensor, rows: torch.Tensor,
                      position_ids: torch.Tensor, cache: Any) -> tuple[Any, list[torch.Tensor]]:
        """A prefill over the prompt rows `rows` ([S] bool) at their full-prompt positions, DeepStack
        included: the visual position mask and every injected layer's features are cut to the same rows."""
        embeds = self.model.get_input_embeddings()(inputs["input_ids"])  # [1, S, H]
        embeds, visual_mask, deepstack, visual = self.deepstack_inputs(inputs, embeds)
        kept_visual = rows[visual_mask[0]]  # [Nvis] bool: which visual positions are fed
        text_model = self.model.model.language_model
        out = text_model(inputs_embeds=embeds[:, rows], position_ids=position_ids[:, :, rows], use_cache=True,
                         visual_pos_masks=visual_mask[:, rows],
                         deepstack_visual_embeds=[d[kept_visual.to(d.device)] for d in deepstack] or None,
                         **{self.cache_kwarg: cache})
        logits = self.model.lm_head(out.last_hidden_state[:, -1:])  # [1, 1, V]
        return SimpleNamespace(logits=logits), visual
