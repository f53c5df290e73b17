"""The lmms-eval chat backend shared by every family: request handling, records, run metrics.

A family subclass only names its adapter class (`adapter_class`)."""

from __future__ import annotations

import collections
import datetime as _dt
import glob
import os
import zlib
from pathlib import Path
from typing import Any, Optional

import torch
from loguru import logger
from tqdm import tqdm

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from lmms_eval.protocol import ChatMessages

from lvspec_eval import __version__
from lvspec_eval.acceptance import build_rule
from lvspec_eval.adapters.base import HFAdapter, Prefill, Session
from lvspec_eval.adapters.loading import (check_checkpoint, check_same_tokenizer,
                                          default_device_map, is_map_file, load_tokenizer, resolve_device_map)
from lvspec_eval.config import ArgsError, DecodeConfig, LVSpecArgs
from lvspec_eval.engine import DecodeResult, decode
from lvspec_eval.metrics.records import (RECORD_VERSION, append_record, decode_fields, paired_fields, recorded_samples,
                                         repair_tail, resume_key, run_means, token_pieces)
from lvspec_eval.pruning import VideoPruning
from lvspec_eval.relevance import build_anchor_finder

DEFAULT_MAX_NEW_TOKENS = 128  # lmms-eval's qwen2_5_vl default when a task sets none


def default_stats_path(method: str, rank: int = 0, world_size: int = 1) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    suffix = f"_rank{rank}" if world_size > 1 else ""
    return Path("lvspec_runs") / f"{stamp}_{method}{suffix}.jsonl"


def sample_seed(seed: int, task: str, split: str, doc_id: Any) -> int:
    """A per-sample seed that does not depend on the order samples are decoded in."""
    return (seed * 1_000_003 + zlib.crc32(f"{task}/{split}/{doc_id}".encode())) % (2**63)


def cut_at_until(text: str, until: tuple[str, ...]) -> str:
    cut = len(text)
    for stop in until:
        if stop:
            pos = text.find(stop)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


class LVSpecBackend(lmms):
    """Chat backend running one decoding method of `lvspec_eval` (see README for model args)."""

    is_simple = False
    adapter_class: type[HFAdapter] = HFAdapter
    family = "base"
    builtin = "qwen2_5_vl"  # lmms-eval's own backend for this family (named in messages)
    default_max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # when the task sets none (as the family's built-in backend)

    def __init__(self, batch_size: Any = 1, device: Optional[str] = None, max_batch_size: Any = None, **kwargs: Any):
        super().__init__()
        self.args = args = LVSpecArgs.from_kwargs(**kwargs)
        if int(batch_size or 1) != 1:
            raise ArgsError(f"batch_size={batch_size}: lvspec backends decode one sample at a time; use --batch_size 1")
        # Everything that can be refused is checked here, before any weights load.
        check_checkpoint(args.pretrained, "target")
        uses_draft = args.method != "ar" and args.draft_pretrained != "self"
        if uses_draft:
            check_checkpoint(args.draft_pretrained, "drafter")

        from accelerate import Accelerator

        self.accelerator = Accelerator()
        # lmms-eval reads the launcher's environment (and later sets _rank/_world_size from it): so do we
        self._rank = int(os.environ.get("RANK", self.accelerator.process_index))
        self._world_size = int(os.environ.get("WORLD_SIZE", self.accelerator.num_processes))
        device_map = args.device_map
        if self._world_size > 1 and device_map is None:  # data parallel: one device per process
            local = int(os.environ.get("LOCAL_RANK", self.accelerator.local_process_index))
            device_map = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        elif device_map is None and device == "cpu":
            device_map = "cpu"
        self.device_map = default_device_map(device_map)
        draft_map = args.draft_device_map or (default_device_map(None) if is_map_file(self.device_map)
                                              else self.device_map)
        target_map = resolve_device_map(self.device_map, "target", args.offload_folder)
        draft_map = resolve_device_map(draft_map, "drafter", args.offload_folder)
        if uses_draft:
            check_same_tokenizer(load_tokenizer(args.pretrained, "target"), load_tokenizer(args.draft_pretrained, "drafter"),
                                 args.pretrained, args.draft_pretrained)
        self.stats_path = Path(args.stats_path) if args.stats_path else default_stats_path(
            args.method, self._rank, self._world_size)
        if args.stats_path and self._world_size > 1:
            self.stats_path = self.stats_path.with_name(f"{self.stats_path.stem}_rank{self._rank}{self.stats_path.suffix}")
        dropped = repair_tail(self.stats_path)
        if dropped:
            logger.warning(f"lvspec: {self.stats_path} ended in a partial line (a killed run); dropped its {dropped} bytes")

        load = dict(dtype=args.dtype, attn_implementation=args.attn_implementation,
                    max_num_frames=args.max_num_frames, fps=args.fps, min_pixels=args.min_pixels,
                    max_pixels=args.max_pixels)
        offload = (lambda role: str(Path(args.offload_folder) / role)) if args.offload_folder else (lambda role: None)
        self.target = self.adapter_class.load(args.pretrained, device_map=target_map, offload_folder=offload("target"),
                                              **load)
        self.draft: Optional[HFAdapter] = None
        if args.method != "ar":
            if args.draft_pretrained == "self":
                self.draft = self.target
            else:
                self.draft = self.adapter_class.load(args.draft_pretrained, device_map=draft_map,
                                                     offload_folder=offload("drafter"), **load)
        for role, adapter in (("target", self.target), ("drafter", self.draft)):
            placement = getattr(adapter.model, "hf_device_map", None) if adapter is not None else None
            if placement:  # the map as transformers applied it, and where the weights are now
                where = collections.Counter(str(p.device) for p in adapter.model.parameters())
                logger.info(f"lvspec: {role} placement: {placement}; parameter tensors by device: {dict(where)} "
                            "(meta: offloaded, loaded by accelerate hooks per forward)")
        logger.info(f"lvspec: method={args.method} target={args.pretrained} draft={args.draft_pretrained}; "
                    f"per-sample records -> {self.stats_path.resolve()}")

    # -- lmms-eval API ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where lmms-eval puts its cross-rank tensors (data parallel): this process's device."""
        return self.accelerator.device

    @property
    def tokenizer(self) -> Any:
        return self.target.tokenizer

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("lvspec backends only generate; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("lvspec backends do not support multi-round generation")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        # refuse what cannot be honoured before any work starts
        configs = [self._decode_config(req.args[2]) for req in requests]
        done = recorded_samples(self._resume_files())  # samples this stats_path already holds
        results, records, reused = [], [], 0
        for req, cfg in zip(tqdm(requests, disable=(self.rank != 0), desc=f"lvspec {self.args.method}"), configs):
            if (req.metadata or {}).get("__padding_only__"):  # lmms-eval's rank padding: discarded, not a sample
                results.append(GenerationResult(text="", token_counts=TokenCounts(output_tokens=0)))
                continue
            ctx, doc_to_messages, gen_kwargs, doc_id, task, split = req.args
            record = self._base_record(task, split, doc_id, cfg)
            previous = done.get(resume_key(record))
            if previous is not None:  # resume: answer from the record, decode nothing
                reused += 1
                records.append(previous)
                results.append(GenerationResult(text=previous["text"],
                                                token_counts=TokenCounts(output_tokens=previous["new_tokens"])))
                continue
            text, n_tokens = "", 0
            try:
                doc = self.task_dict[task][split][doc_id]
                inputs = self._prepare(doc_to_messages(doc))
                text, fields = self._decode_sample(inputs, cfg, sample_seed(self.args.seed, task, split, doc_id))
                record.update(fields)
                n_tokens = fields["new_tokens"]
            except Exception as exc:  # one bad sample is recorded and the run goes on
                logger.opt(exception=exc).warning(f"lvspec: sample {task}/{split}/{doc_id} failed: {exc}")
                record["error"] = f"{type(exc).__name__}: {exc}"
            append_record(self.stats_path, record)
            if not record.get("error"):
                done[resume_key(record)] = record
            records.append(record)
            results.append(GenerationResult(text=text, token_counts=TokenCounts(output_tokens=n_tokens)))
        if reused:
            logger.info(f"lvspec: resumed: {reused} of {len(records)} samples were already recorded under "
                        f"{self.stats_path.parent}; decoded the other {len(records) - reused}")
        self._log_run(records)
        return results

    def _resume_files(self) -> list[Path]:
        """The record files a run with this stats_path may resume from: the file itself and, for a
        data-parallel run, every rank's file (a run may resume with another number of processes)."""
        if not self.args.stats_path:
            return [self.stats_path] if self.stats_path.exists() else []
        base = Path(self.args.stats_path)
        files = [base] + sorted(base.parent.glob(f"{glob.escape(base.stem)}_rank*{base.suffix}"))
        return [f for f in files if f.is_file()]

    # -- one sample ---------------------------------------------------------------------------
    def _decode_config(self, gen_kwargs: dict[str, Any]) -> DecodeConfig:
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        if temperature > 0 or gen_kwargs.get("do_sample"):
            raise ArgsError(
                f"the task asks for sampling (temperature={temperature}, do_sample={gen_kwargs.get('do_sample')}); "
                "lvspec backends decode greedily only: set temperature: 0 in the task's generation_kwargs "
                "or pass --gen_kwargs temperature=0"
            )
        until = gen_kwargs.get("until") or ()
        until = (until,) if isinstance(until, str) else tuple(until)
        max_new = gen_kwargs.get("max_new_tokens")
        max_new = self.default_max_new_tokens if max_new is None else int(max_new)
        if max_new < 1:
            raise ArgsError(f"max_new_tokens={max_new}: at least one new token is needed; set max_new_tokens >= 1 in "
                            "the task's generation_kwargs or pass --gen_kwargs max_new_tokens=N")
        eos = self.target.tokenizer.eos_token_id
        return DecodeConfig(max_new_tokens=max_new, eos_ids=(eos,) if eos is not None else (),
                            num_draft_tokens=self.args.num_draft_tokens, until=until)

    def _prepare(self, messages: Any) -> dict[str, Any]:
        chat = ChatMessages(messages=messages)
        images, videos, _ = chat.extract_media()
        if images:
            shown = images[0] if isinstance(images[0], str) else type(images[0]).__name__
            raise ValueError(f"the request carries an image ({shown}) where a video is expected; lvspec backends "
                             f"decode videos: give the task a video, or run image tasks with lmms-eval's {self.builtin}")
        text = "".join(part.text or "" for m in chat.messages for part in m.content if part.type == "text")
        if not text.strip():
            raise ValueError("empty prompt: the request has no text (the task's doc_to_text gave an empty string); "
                             "fix the doc or the task's doc_to_text")
        hf_messages = chat.to_hf_messages(video_kwargs=self.target.video_kwargs(list(videos)))
        return self.target.prepare(hf_messages)

    def _text(self, tokens: list[int], until: tuple[str, ...]) -> str:
        text = self.target.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return cut_at_until(text, until)

    def _pieces(self, tokens: list[int]) -> list[str]:
        """Per-token text for the report's token view (special tokens spelled out, no `until` cut)."""
        tok = self.target.tokenizer
        return token_pieces(lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                            list(tokens))

    def _run(self, method_args: LVSpecArgs, inputs: dict[str, Any], cfg: DecodeConfig, seed: int) -> DecodeResult:
        ar = method_args.method == "ar"
        stop = None
        if cfg.until:
            tok = self.target.tokenizer

            def stop(tokens: list[int]) -> bool:
                text = tok.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                return any(u and u in text for u in cfg.until)

        rule = build_rule(method_args)  # the call's settings (None for ar); a small strategy object
        keep = method_args.video_keep()
        pruning = VideoPruning(keep=keep, mass=method_args.draft_video_mass,
                               layer=method_args.draft_video_layer) if keep < 1.0 else None
        # relevance signals only for the rules that score relevance (target_prob reads the target's logits)
        anchors = rule is not None and rule.needs_anchors and method_args.anchor_rule != "target_prob"
        capture = method_args.relevance_layer if (anchors and method_args.relevance_repr == "hidden") else None
        probe = method_args.relevance_layer if (anchors and method_args.relevance_repr == "attention") else None
        return decode(
            self.target, inputs, cfg,
            draft=None if ar else self.draft,
            pruning=pruning,
            rule=rule,
            anchor_factory=lambda prefill, session: self._anchor_factory(prefill, session, method_args),
            capture_layer=capture,
            video_attention_layer=probe,
            generator=torch.Generator().manual_seed(seed),
            stop=stop,
        )

    def context_limit(self) -> Optional[int]:
        if self.args.max_length:
            return self.args.max_length
        return getattr(self.target.model.config.get_text_config(), "max_position_embeddings", None)

    def _decode_sample(self, inputs: dict[str, Any], cfg: DecodeConfig, seed: int) -> tuple[str, dict[str, Any]]:
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        limit = self.context_limit()
        if limit and prompt_tokens + cfg.max_new_tokens > limit:
            raise ValueError(
                f"prompt ({prompt_tokens} tokens, video included) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
                f"context limit ({limit}); lower max_num_frames or max_pixels, or max_new_tokens"
            )
        res = self._run(self.args, inputs, cfg, seed)
        text = self._text(res.tokens, cfg.until)
        fields = decode_fields(res, cfg.num_draft_tokens if self.args.method != "ar" else 0)
        fields["text"] = text
        fields["token_texts"] = self._pieces(res.tokens)
        if self.args.paired_baseline and self.args.method != "ar":
            ar_res = self._run(self.args.replace(method="ar"), inputs, cfg, seed)
            fields.update(paired_fields(res, ar_res, text, self._text(ar_res.tokens, cfg.until)))
            fields["ar_token_texts"] = self._pieces(ar_res.tokens)
        fields["prompt_tokens"] = prompt_tokens
        return text, fields

    def _anchor_factory(self, prefill: Prefill, session: Session, a: LVSpecArgs):
        """The per-sample anchor finder under the settings of this decode (``a``: the call's method args)."""
        if a.anchor_rule == "target_prob":  # reads the verify logits: no visual representation to prepare
            visual = prompt = None
        elif a.relevance_repr == "hidden":
            visual = prefill.hidden[~prefill.text_mask] if prefill.visual_features is not None else None
            prompt = prefill.hidden[prefill.text_mask]
        elif a.relevance_repr == "attention":  # scored from the verify forwards' attention, not features
            visual = prompt = None
        else:
            visual = prefill.visual_features
            prompt = session.embed(prefill.prompt_ids[prefill.text_mask])
        return build_anchor_finder(visual=visual, prompt_reps=prompt, top_n=a.top_n, rule=a.anchor_rule,
                                   relax_ratio=a.relax_ratio, side=a.anchor_side, repr_kind=a.relevance_repr,
                                   embed=session.embed)

    def _base_record(self, task: str, split: str, doc_id: Any, cfg: DecodeConfig) -> dict[str, Any]:
        a = self.args
        return {
            "record_version": RECORD_VERSION,
            "lvspec_eval_version": __version__,
            "task": task, "split": split, "doc_id": doc_id,
            "method": a.method,
            "family": self.family,
            "target": a.pretrained,
            "draft": None if a.method == "ar" else a.draft_pretrained,
            "params": a.rule_params(),
            "dtype": a.dtype,
            "device": str(self.target.input_device),
            "device_name": self._device_name(),
            "rank": self._rank,
            "world_size": self._world_size,
            "paired_baseline": a.paired_baseline,
            "max_new_tokens": cfg.max_new_tokens,
            "until": list(cfg.until),
            "video": {"max_num_frames": a.max_num_frames, "fps": a.fps, "min_pixels": a.min_pixels,
                      "max_pixels": a.max_pixels},
        }

    def _device_name(self) -> str:
        device = self.target.input_device
        if device.type == "cuda":
            return torch.cuda.get_device_name(device)
        import platform

        return platform.processor() or platform.machine() or "cpu"

    def _log_run(self, records: list[dict[str, Any]]) -> None:
        ok = [r for r in records if not r.get("error")]
        tokens = sum(r["new_tokens"] for r in ok)
        elapsed = sum(r["total_s"] for r in ok)
        log_metrics(total_elapsed_time=elapsed, total_gen_tokens=tokens,
                    avg_speed=tokens / elapsed if elapsed else 0.0,
                    additional_metrics={k: v for k, v in run_means(records).items()})
