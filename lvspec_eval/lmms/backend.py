"""The lmms-eval chat backend shared by every family: request handling (generate_until, resume,
failed samples) and run metrics. Its neighbours: pair.py loads the models, inputs.py prepares a
request's inputs, record.py assembles a sample's record; the method itself is built once by
`lvspec_eval.engine.methods.build_method`.

A family subclass names its adapter class (`adapter_class`) and the built-in lmms-eval backend it
mirrors (`builtin`: dtype, max_new_tokens, `until` treatment and text decoding when the user and
the task set none), so that `method=ar` returns the built-in's text."""

from __future__ import annotations

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

from lvspec_eval.adapters.base import HFAdapter
from lvspec_eval.config import QWEN2_5_VL_BUILTIN, ArgsError, BuiltinDefaults, DecodeConfig, LVSpecArgs
from lvspec_eval.engine import Method, build_method
from lvspec_eval.lmms.inputs import prepare_inputs
from lvspec_eval.lmms.task_prompts import BuiltinPrompts
from lvspec_eval.lmms.pair import check_checkpoints, check_tokenizers, device_maps, load_pair
from lvspec_eval.lmms.run_lock import RunLock, claim_stats_path
from lvspec_eval.lmms.record import Decoded, device_name, sample_fields
from lvspec_eval.lmms.run_metrics import log_run
from lvspec_eval.metrics.records import (append_record, base_record, recorded_samples, repair_tail, resume_key,
                                         token_pieces)

def default_stats_path(method: str, rank: int = 0, world_size: int = 1) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    suffix = f"_rank{rank}" if world_size > 1 else ""
    return Path("lvspec_runs") / f"{stamp}_{method}{suffix}.jsonl"


def sample_seed(seed: int, task: str, split: str, doc_id: Any) -> int:
    """A per-sample seed that does not depend on the order samples are decoded in."""
    return (seed * 1_000_003 + zlib.crc32(f"{task}/{split}/{doc_id}".encode())) % (2**63)


def ar_first(doc_id: Any, world_size: int = 1) -> bool:
    """Whether the paired baseline decodes `ar` before the method on this sample: on every other doc
    of this process's share (lmms-eval deals docs to ranks in turn), by a rule that does not depend on
    the order samples are decoded in. A doc id that is not an integer counts by its CRC-32."""
    index = doc_id if isinstance(doc_id, int) else zlib.crc32(str(doc_id).encode())
    return (index // max(1, world_size)) % 2 == 1


def effective_until(gen_kwargs: dict[str, Any], policy: str, builtin: str = "the built-in backend") -> tuple[str, ...]:
    """The stop strings a decode honours, from the task's generation kwargs under `policy`
    (config.UNTIL_POLICIES). A policy that reads `until` refuses what the built-in refuses: a
    value that is neither a string nor a list of strings."""
    if policy == "ignore" or "until" not in gen_kwargs:
        return ()
    until = gen_kwargs["until"]
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
        raise ArgsError(f"the task's until={until!r} ({type(until).__name__}) is not a string or a list of strings "
                        f"(lmms-eval's {builtin} refuses it too); give `until` as a list of strings in the task's "
                        "generation_kwargs, e.g. until: [\"\\n\\n\"]")
    if policy == "drop":
        return ()
    if policy == "honour_except_blank_line":
        until = [u for u in until if u != "\n\n"]
    return tuple(until)


def asks_for_sampling(gen_kwargs: dict[str, Any]) -> Optional[str]:
    """Why the request asks for sampling (None: greedy). As lmms-eval's qwen2_5_vl and llava_hf decide:
    temperature > 0 samples; `do_sample` alone does not (they decode greedily at temperature 0)."""
    value = gen_kwargs.get("temperature")
    try:
        temperature = float(value or 0.0)
    except (TypeError, ValueError):
        return f"temperature={value!r} is not a number"
    return f"temperature={temperature}" if temperature > 0 else None


def special_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids every rule verifies strictly: the tokenizer's special tokens (EOS, pad, ...) and its added
    tokens marked special (e.g. Qwen's <|im_start|>, <|vision_start|>)."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return tuple(sorted(i for i in ids if i is not None))


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
    #: the built-in lmms-eval backend this family mirrors: its defaults and stop semantics
    builtin: BuiltinDefaults = QWEN2_5_VL_BUILTIN

    def __init__(self, batch_size: Any = 1, device: Optional[str] = None, max_batch_size: Any = None, **kwargs: Any):
        super().__init__()
        args = LVSpecArgs.from_kwargs(**kwargs)
        self.method: Method = build_method(args)  # the run's method, built once from its args
        self.ar: Method = build_method(args.replace(method="ar"))  # the paired baseline
        if int(batch_size or 1) != 1:
            raise ArgsError(f"batch_size={batch_size}: lvspec backends decode one sample at a time; use --batch_size 1")
        # Everything that can be refused is checked here, before any weights load.
        check_checkpoints(args)

        from accelerate import Accelerator

        self.accelerator = Accelerator()
        # lmms-eval reads the launcher's environment (and later sets _rank/_world_size from it): so do we
        self._rank = int(os.environ.get("RANK", self.accelerator.process_index))
        self._world_size = int(os.environ.get("WORLD_SIZE", self.accelerator.num_processes))
        target_map, draft_map = device_maps(
            args, device=device, world_size=self._world_size,
            local_rank=int(os.environ.get("LOCAL_RANK", self.accelerator.local_process_index)))
        check_tokenizers(args)
        self.stats_path = Path(args.stats_path) if args.stats_path else default_stats_path(
            args.method, self._rank, self._world_size)
        if args.stats_path and self._world_size > 1:
            self.stats_path = self.stats_path.with_name(f"{self.stats_path.stem}_rank{self._rank}{self.stats_path.suffix}")
        # refused before any weights load: a record file that cannot be written, or one another run appends to
        # (held until the end of generate_until; a constructor that fails later frees it with the object). Rank 0
        # of a data-parallel run also claims the base path, which a single-process run on it writes.
        base = [Path(args.stats_path)] if args.stats_path and self._world_size > 1 and self._rank == 0 else []
        self._run_lock: RunLock = claim_stats_path(self.stats_path, *base)
        dropped = repair_tail(self.stats_path)
        if dropped:
            logger.warning(f"lvspec: {self.stats_path} ended in a partial line (a killed run); dropped its {dropped} bytes")

        self.dtype = args.dtype or self.builtin.dtype  # the family's built-in default unless given
        self.target, self.draft = load_pair(args, self.adapter_class, target_map, draft_map, dtype=self.dtype)
        self._warmed_up = False  # the paired baseline's warm-up decode (once per run)
        logger.info(f"lvspec: method={args.method} target={args.pretrained} draft={args.draft_pretrained}; "
                    f"per-sample records -> {self.stats_path.resolve()}")

    @property
    def args(self) -> LVSpecArgs:
        """The run's model args (those its method was built from)."""
        return self.method.args

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
        self._run_lock.acquire()  # held since construction; taken again by a later call on this backend
        try:
            return self._generate(requests)
        finally:
            self._run_lock.release()  # a finished run frees its stats_path

    def _generate(self, requests: list[Instance]) -> list[GenerationResult]:
        # generation kwargs that cannot be honoured (sampling, a bad `until` or max_new_tokens): a failed record
        # per sample of that task, logged once per message; the other requests are decoded
        prompts = BuiltinPrompts(self.builtin.model)  # the task's prompt as the mirrored built-in gets it
        configs: list[Any] = []
        for req in requests:
            try:
                configs.append(self._decode_config(prompts.generation_kwargs(req.args[1], req.args[2])))
            except ArgsError as exc:
                configs.append(exc)
        for message in dict.fromkeys(str(c) for c in configs if isinstance(c, ArgsError)):
            count = sum(1 for c in configs if isinstance(c, ArgsError) and str(c) == message)
            logger.error(f"lvspec: {count} request(s) not decoded: {message}")
        done = recorded_samples(self._resume_files())  # samples this stats_path already holds
        results, records, reused = [], [], 0
        for req, cfg in zip(tqdm(requests, disable=(self.rank != 0), desc=f"lvspec {self.args.method}"), configs):
            if (req.metadata or {}).get("__padding_only__"):  # lmms-eval's rank padding: discarded, not a sample
                results.append(GenerationResult(text="", token_counts=TokenCounts(output_tokens=0)))
                continue
            ctx, doc_to_messages, gen_kwargs, doc_id, task, split = req.args
            if isinstance(cfg, ArgsError):
                record = self._base_record(task, split, doc_id, None, gen_kwargs)
                record["error"] = f"{type(cfg).__name__}: {cfg}"
                append_record(self.stats_path, record)
                records.append(record)
                results.append(GenerationResult(text="", token_counts=TokenCounts(output_tokens=0)))
                continue
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
                inputs = prepare_inputs(self.target, prompts.messages(doc_to_messages, doc), self.builtin.backend)
                text, fields = self._decode_sample(inputs, cfg, sample_seed(self.args.seed, task, split, doc_id),
                                                   ar_first=ar_first(doc_id, self._world_size))
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
        log_run(records, self._world_size)
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
        """One request's decode settings, stopping as the family's built-in backend (`builtin`) stops:
        at the tokenizer's EOS, at max_new_tokens (the built-in's default when the task sets none),
        and at the task's `until` strings only as the built-in treats them (`until_policy`)."""
        builtin = self.builtin
        sampling = asks_for_sampling(gen_kwargs)
        if sampling:
            raise ArgsError(
                f"the task asks for sampling ({sampling}); lvspec backends decode greedily only: set temperature: 0 "
                "in the task's generation_kwargs or pass --gen_kwargs temperature=0"
            )
        until = effective_until(gen_kwargs, self.args.until_policy or builtin.until, builtin.backend)
        max_new = gen_kwargs.get("max_new_tokens")
        try:
            max_new = builtin.max_new_tokens if max_new is None else int(max_new)
        except (TypeError, ValueError):
            raise ArgsError(f"max_new_tokens={max_new!r} is not an integer; set max_new_tokens: N in the task's "
                            "generation_kwargs or pass --gen_kwargs max_new_tokens=N") from None
        if max_new < 1:
            raise ArgsError(f"max_new_tokens={max_new}: at least one new token is needed; set max_new_tokens >= 1 in "
                            "the task's generation_kwargs or pass --gen_kwargs max_new_tokens=N")
        tokenizer = self.target.tokenizer
        eos = tokenizer.eos_token_id  # the built-ins pass eos_token_id=tokenizer.eos_token_id to generate
        return DecodeConfig(max_new_tokens=max_new, eos_ids=(eos,) if eos is not None else (),
                            num_draft_tokens=self.args.num_draft_tokens, until=until,
                            special_ids=special_token_ids(tokenizer))

    def _detokenize(self, tokens: list[int]) -> str:
        """The answer text of `tokens` as the family's built-in decodes it (special tokens skipped)."""
        return self.target.tokenizer.decode(list(tokens), skip_special_tokens=True,
                                            clean_up_tokenization_spaces=self.builtin.clean_up_spaces)

    def _text(self, tokens: list[int], until: tuple[str, ...]) -> str:
        return cut_at_until(self._detokenize(tokens), until)

    def _pieces(self, tokens: list[int]) -> list[str]:
        """Per-token text for the report's token view (special tokens spelled out, no `until` cut)."""
        tok = self.target.tokenizer
        return token_pieces(lambda ids: tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                            list(tokens))

    def _decoded(self, method: Method, inputs: dict[str, Any], cfg: DecodeConfig, seed: int) -> Decoded:
        res = method.decode(self.target, self.draft, inputs, cfg, seed=seed, detokenize=self._detokenize)
        return Decoded(res, self._text(res.tokens, cfg.until), self._pieces(res.tokens))

    def context_limit(self) -> Optional[int]:
        if self.args.max_length:
            return self.args.max_length
        return getattr(self.target.model.config.get_text_config(), "max_position_embeddings", None)

    def _decode_sample(self, inputs: dict[str, Any], cfg: DecodeConfig, seed: int,
                       ar_first: bool = False) -> tuple[str, dict[str, Any]]:
        """Decode one sample (and, with paired_baseline, its `ar` twin, first when `ar_first`: the
        order alternates so that neither side always runs on a warmer machine; the run's first paired
        sample is preceded by one warm-up decode that is not recorded). Returns (text, record fields)."""
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        limit = self.context_limit()
        if limit and prompt_tokens + cfg.max_new_tokens > limit:
            raise ValueError(
                f"prompt ({prompt_tokens} tokens, video included) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
                f"context limit ({limit}); lower max_num_frames or max_pixels, or max_new_tokens"
            )
        if not (self.args.paired_baseline and self.method.drafts):
            run, ar = self._decoded(self.method, inputs, cfg, seed), None
        else:
            if not self._warmed_up:
                self._warmed_up = True
                self._decoded(self.method, inputs, cfg, seed)  # warm-up, not recorded
            order = (self.ar, self.method) if ar_first else (self.method, self.ar)
            done = {m.name: self._decoded(m, inputs, cfg, seed) for m in order}
            run, ar = done[self.method.name], done[self.ar.name]
        fields = sample_fields(run, cfg.num_draft_tokens if self.method.drafts else 0, prompt_tokens, ar)
        return run.text, fields

    def _base_record(self, task: str, split: str, doc_id: Any, cfg: Optional[DecodeConfig],
                     gen_kwargs: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The record's identity and settings; with no `cfg` (generation kwargs refused) the limits as asked."""
        device = self.target.input_device
        return base_record(self.args, cfg, asked=gen_kwargs, dtype=self.dtype, task=task, split=split, doc_id=doc_id,
                           family=self.family, device=str(device), device_name=device_name(device), rank=self._rank,
                           world_size=self._world_size)
