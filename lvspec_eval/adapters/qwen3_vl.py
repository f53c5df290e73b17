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
  (`QwenSession`: cache length + this sample's offset, kept on the session). The model caches
  `model.model.rope_deltas` (generate sets it) and reuses it when no position ids are given; here
  they always are, so a value left by an earlier sample or a `generate` call is never read.
- **DeepStack**: features of some vision blocks are added to the hidden states of the first
  text layers at the visual positions (prefill only; decode steps carry no visual tokens). The
  full prefill is the model's own forward. A pruned prefill (SpecVLM, Self-SD,
  `draft_video_keep < 1`) feeds the kept rows only: `visual_features` returns DeepStack's
  features over every visual position (`VisualFeatures.extra["deepstack"]`),
  `pruned_forward_kwargs` cuts them and the visual position mask to the kept rows, each kept token
  at its original position, and `pruned_forward` runs the text model with them (the multimodal
  model's forward passes its own DeepStack arguments to the text model, so it cannot take these).
- **Attention probes**: Qwen3 attention normalises q and k per head (RMSNorm) before rotary; the
  shared probes (`adapters/probes.py`) apply the layer's `q_norm` to their queries and read keys
  from the KV cache (stored after `k_norm` and rotary), so relevance and pruning read the
  attention the layer computes.
- **Stop semantics** (the backend's, `config.QWEN3_VL_BUILTIN`): greedy whatever the checkpoint's generation_config says
  (Instruct checkpoints ship sampling defaults; its greedy logits processors, e.g. a repetition penalty,
  are applied as `generate` applies them: `engine/processors.py`), EOS only (`<|im_end|>`), task `until` ignored.
- **MoE**: routing is per token, so block and step forwards agree and the speculative loop
  needs nothing special.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from lvspec_eval.adapters.base import IMAGE, TEXT, VIDEO, VisualFeatures, feature_rows
from lvspec_eval.adapters.loading import CheckpointError, check_checkpoint, load_pretrained, looks_local, resolve_dtype
from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter, count_frames

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


class Qwen3VLAdapter(QwenVLAdapter):
    """Qwen3-VL dense or MoE (see the module docstring for the family's quirks)."""

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

    # -- prefill hooks ------------------------------------------------------------------------
    def visual_features(self, inputs: dict[str, Any]) -> VisualFeatures:
        """This model's own merged image and video features, and DeepStack's: `extra["deepstack"]`
        holds, per injected decoder layer, [Nvis, H] over every visual position of the prompt in
        prompt order (images and videos joined as Qwen3VLModel.forward joins them)."""
        inner = self.model.model
        types = self.token_types(inputs)  # [S]
        visual = types != TEXT  # [S] bool
        features = VisualFeatures()
        deepstack: list[torch.Tensor] = []  # per layer [Nvis, H]
        for kind, pixels, grid, encode in ((IMAGE, "pixel_values", "image_grid_thw", inner.get_image_features),
                                           (VIDEO, "pixel_values_videos", "video_grid_thw", inner.get_video_features)):
            if inputs.get(pixels) is None:
                continue
            out = encode(inputs[pixels], inputs[grid], return_dict=True)
            if kind == IMAGE:
                features.image = feature_rows(out.pooler_output)  # [Ni, H]
            else:
                features.video = feature_rows(out.pooler_output)  # [Nvid, H]
            at = (types == kind)[visual]  # [Nvis] bool: this kind's rows among the visual positions
            for layer, layer_feats in enumerate(out.deepstack_features):
                layer_feats = feature_rows(layer_feats)  # [N_kind, H]
                if layer == len(deepstack):
                    deepstack.append(layer_feats.new_zeros(int(visual.sum()), layer_feats.shape[-1]))
                deepstack[layer][at.to(layer_feats.device)] = layer_feats
        features.extra["deepstack"] = deepstack
        return features

    def pruned_forward_kwargs(self, inputs: dict[str, Any], features: VisualFeatures, types: torch.Tensor,
                              rows: torch.Tensor) -> dict[str, Any]:
        """DeepStack of a pruned prefill: the visual position mask over the fed rows ([1, S'] bool) and
        every injected layer's features cut to the kept visual rows ([Nvis', H] each)."""
        visual = types != TEXT  # [S] bool
        kept = rows[visual]  # [Nvis] bool: which visual positions are fed
        deepstack = features.extra.get("deepstack") or []
        return {"visual_pos_masks": visual[rows].view(1, -1),
                "deepstack_visual_embeds": [d[kept.to(d.device)] for d in deepstack] or None}

    def pruned_forward(self, *, logits_to_keep: int = 0, **kwargs: Any) -> CausalLMOutputWithPast:
        """The text model with the DeepStack kwargs, then the LM head on the last `logits_to_keep`
        rows (Qwen3VLModel.forward passes its own DeepStack arguments to the text model, so the
        multimodal forward cannot take these)."""
        hidden = self.model.model.language_model(**kwargs).last_hidden_state  # [1, S', H]
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.model.lm_head(hidden))  # [1, keep, V]
