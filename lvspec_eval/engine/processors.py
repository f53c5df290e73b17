"""The logits processors of HF `generate`'s greedy path, applied wherever the engine takes an argmax.

lmms-eval's built-in backends call `model.generate(**inputs, eos_token_id=..., do_sample=False,
num_beams=..., max_new_tokens=..., ...)`; every other setting comes from the checkpoint's
`generation_config.json`. Greedy decoding there still runs the LOGITS PROCESSORS built from that
merged config (e.g. the `repetition_penalty: 1.05` of every Qwen2.5-VL Instruct checkpoint), though
not the sampling warpers. So that `method=ar` returns the built-in's text, the engine runs the same
processors (the public classes of `transformers.generation.logits_process`, built under the same
conditions as `GenerationMixin._get_logits_processor` in transformers 5.24) on the float32 logits
before each argmax of the target (and of the drafter, for better proposals).

A processor sees `input_ids` = the prompt ids the model got (video placeholders included) + every
token generated before the position it scores. In a speculative block, row j of the verify
forward over [last, d_1..d_K] is scored with prompt + emitted tokens + d_1..d_j: exactly what
`generate` would pass at that position, so a lossless method still equals `ar` token for token.

Settings that cannot be replayed position by position, or that make `generate` leave greedy
search, are refused with `GenerationConfigError` (docs/greedy.md). With no processor active,
`greedy_processing` returns None and the engine runs nothing extra.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from lvspec_eval.config import ArgsError

#: generate fills top_k with transformers' global default (50) when neither the checkpoint nor the
#: call sets it; it matters only to the mode (contrastive search needs top_k > 1 and penalty_alpha > 0)
GENERATE_DEFAULT_TOP_K = 50
#: the fix for a setting of the checkpoint's generation config
_CHECKPOINT_FIX = ("remove it from the checkpoint's generation_config.json (or set model.generation_config.{name} "
                   "= None), or run lmms-eval's built-in backend")


class GenerationConfigError(ArgsError):
    """A generation setting the engine cannot reproduce; the message names it and the fix."""


def merged_generation_config(model_config: Any, generate_kwargs: Mapping[str, Any]) -> Any:
    """`model_config` (a model's `generation_config`) merged with the kwargs a built-in passes to
    `generate`, as `generate` merges them: the checkpoint's values, then the call's on top."""
    from transformers import GenerationConfig

    config = GenerationConfig()
    config.update(**model_config.to_dict(), defaults_only=True, allow_custom_entries=True)
    unused = config.update(**generate_kwargs)
    if unused:
        raise ValueError(f"not generation settings: {sorted(unused)}")
    return config


def _source(name: str, generate_kwargs: Mapping[str, Any]) -> str:
    return ("the built-in backend's generate call (the task's generation_kwargs or its default)"
            if name in generate_kwargs else "the checkpoint's generation_config.json")


def check_greedy(config: Any, generate_kwargs: Mapping[str, Any]) -> None:
    """Refuse a merged config whose `generate` would not be greedy search with position-wise processors."""
    from transformers import SynthIDTextWatermarkingConfig
    from transformers.generation import GenerationMode

    mode = config.get_generation_mode()
    top_k = config.top_k if config.top_k is not None or "top_k" in generate_kwargs else GENERATE_DEFAULT_TOP_K
    if mode == GenerationMode.GREEDY_SEARCH and (config.penalty_alpha or 0) > 0 and (top_k or 0) > 1:
        mode = GenerationMode.CONTRASTIVE_SEARCH
    if mode != GenerationMode.GREEDY_SEARCH:
        triggers = {"num_beams": (config.num_beams or 1) > 1, "num_beam_groups": (config.num_beam_groups or 1) > 1,
                    "constraints": config.constraints is not None, "force_words_ids": config.force_words_ids is not None,
                    "penalty_alpha": (config.penalty_alpha or 0) > 0, "use_mtp": bool(config.use_mtp),
                    "prompt_lookup_num_tokens": config.prompt_lookup_num_tokens is not None,
                    "assistant_early_exit": config.assistant_early_exit is not None,
                    "dola_layers": config.dola_layers is not None}
        named = [f"{n}={getattr(config, n)!r} (from {_source(n, generate_kwargs)})" for n, on in triggers.items() if on]
        raise GenerationConfigError(
            f"the built-in backend's generate would run {mode.value}, not greedy search, because of {'; '.join(named)}; "
            "lvspec backends decode greedily: set num_beams: 1 in the task's generation_kwargs (or pass --gen_kwargs "
            "num_beams=1) and remove the other settings from the checkpoint's generation_config.json")
    refused = {
        "guidance_scale": (config.guidance_scale is not None and config.guidance_scale != 1,
                           "classifier-free guidance runs a second, unconditional forward with its own cache at "
                           "every generated token, which a speculative block cannot replay position by position"),
        "watermarking_config": (isinstance(config.watermarking_config, SynthIDTextWatermarkingConfig),
                                "the SynthID watermark keeps state from call to call, so it cannot be applied "
                                "position by position inside a speculative block"),
        "stop_strings": (config.stop_strings is not None,
                         "the built-in's generate call passes no tokenizer, so transformers refuses stop strings"),
        "max_time": (config.max_time is not None,
                     "a wall-clock limit makes the answer depend on the machine's speed"),
    }
    for name, (applies, why) in refused.items():
        if applies:
            raise GenerationConfigError(f"{name}={getattr(config, name)!r} in {_source(name, generate_kwargs)} is not "
                                        f"supported: {why}; " + _CHECKPOINT_FIX.format(name=name))


def greedy_processors(config: Any, prompt_ids: torch.Tensor, max_new_tokens: int, vocab_size: int) -> Any:
    """The `LogitsProcessorList` that `generate` builds for greedy search from the merged `config` (as
    `GenerationMixin._get_logits_processor` in transformers 5.24, same classes, same order, same
    conditions; no sampling warpers), for one prompt of a decoder-only model at batch size 1.

    prompt_ids: [S] the input_ids the model got (the device is the one `generate` processes on);
    max_new_tokens: the call's (generate sets max_length = S + max_new_tokens); vocab_size: the text
    config's (the green-list watermark's). The attention mask of a batch of one is all ones, which
    `generate` drops before it builds the processors: the repetition penalty ignores no prompt prefix."""
    from transformers import (EncoderNoRepeatNGramLogitsProcessor, EncoderRepetitionPenaltyLogitsProcessor,
                              ExponentialDecayLengthPenalty, ForcedBOSTokenLogitsProcessor,
                              ForcedEOSTokenLogitsProcessor, InfNanRemoveLogitsProcessor, LogitNormalization,
                              LogitsProcessorList, MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor,
                              NoBadWordsLogitsProcessor, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                              SequenceBiasLogitsProcessor, SuppressTokensAtBeginLogitsProcessor,
                              SuppressTokensLogitsProcessor)

    c = config
    device = prompt_ids.device
    s = int(prompt_ids.numel())
    encoder_ids = prompt_ids.view(1, s)  # [1, S]: generate's inputs_tensor (decoder-only: the input_ids)
    eos = None if c.eos_token_id is None else torch.tensor(c.eos_token_id, dtype=torch.long, device=device).view(-1)
    max_length = s + int(max_new_tokens)
    min_length = c.min_length if c.min_new_tokens is None else c.min_new_tokens + s
    has_encoder_ids = not bool((encoder_ids < 0).any())

    out = LogitsProcessorList()
    if c.sequence_bias is not None:
        out.append(SequenceBiasLogitsProcessor(sequence_bias=c.sequence_bias))
    if c.encoder_repetition_penalty is not None and c.encoder_repetition_penalty != 1.0 and has_encoder_ids:
        out.append(EncoderRepetitionPenaltyLogitsProcessor(penalty=c.encoder_repetition_penalty,
                                                           encoder_input_ids=encoder_ids))
    if c.repetition_penalty is not None and c.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(c.repetition_penalty, prompt_ignore_length=None))
    if c.no_repeat_ngram_size is not None and c.no_repeat_ngram_size > 0:
        out.append(NoRepeatNGramLogitsProcessor(c.no_repeat_ngram_size))
    if c.encoder_no_repeat_ngram_size is not None and c.encoder_no_repeat_ngram_size > 0 and has_encoder_ids:
        out.append(EncoderNoRepeatNGramLogitsProcessor(c.encoder_no_repeat_ngram_size, encoder_ids))
    if c.bad_words_ids is not None:
        out.append(NoBadWordsLogitsProcessor(c.bad_words_ids, eos))
    if min_length is not None and eos is not None and min_length > 0:
        out.append(MinLengthLogitsProcessor(min_length, eos, device=device))
    if c.min_new_tokens is not None and eos is not None and c.min_new_tokens > 0:
        out.append(MinNewTokensLengthLogitsProcessor(s, c.min_new_tokens, eos, device=device))
    if c.forced_bos_token_id is not None:
        out.append(ForcedBOSTokenLogitsProcessor(c.forced_bos_token_id))
    if c.forced_eos_token_id is not None:
        out.append(ForcedEOSTokenLogitsProcessor(max_length, c.forced_eos_token_id, device=device))
    if c.remove_invalid_values is True:
        out.append(InfNanRemoveLogitsProcessor())
    if c.exponential_decay_length_penalty is not None:
        out.append(ExponentialDecayLengthPenalty(c.exponential_decay_length_penalty, eos, s))
    if c.suppress_tokens is not None:
        out.append(SuppressTokensLogitsProcessor(c.suppress_tokens, device=device))
    if c.begin_suppress_tokens is not None:
        begin = s if (s > 1 or c.forced_bos_token_id is None) else s + 1
        out.append(SuppressTokensAtBeginLogitsProcessor(c.begin_suppress_tokens, begin, device=device))
    if c.watermarking_config is not None:
        out.append(c.watermarking_config.construct_processor(vocab_size, device))
    if c.renormalize_logits is True:
        out.append(LogitNormalization())
    return out


class ContextProcessors:
    """The processors of one decode, bound to one model's prompt: `(logits, emitted, drafts)` scores
    each row at the position `generate` would (see `__call__`)."""

    def __init__(self, processors: Any, prompt_ids: torch.Tensor):
        self.processors = processors
        self.prompt_ids = prompt_ids.view(-1)  # [S]
        self.device = prompt_ids.device

    def __call__(self, logits: torch.Tensor, emitted: Sequence[int], drafts: Sequence[int]) -> torch.Tensor:
        """logits [k, V] of the last k positions fed -> processed float32 [k, V] on the prompt's device.

        The last row follows prompt + emitted + drafts; row j follows everything but the last k-1-j
        drafts (a verify block [last, d_1..d_K]: row j sees d_1..d_j; a drafter step or the prefill:
        one row after everything)."""
        k = logits.shape[0]
        tail = torch.tensor([*emitted, *drafts], dtype=torch.long, device=self.device)  # [L]
        ids = torch.cat([self.prompt_ids, tail]).view(1, -1)  # [1, S + L]
        end = ids.shape[1] - (k - 1)  # row 0 follows ids[:, :end]
        scores = logits.to(device=self.device, dtype=torch.float32, copy=True)  # [k, V], as generate's float32 copy
        return torch.cat([self.processors(ids[:, :end + j], scores[j:j + 1]) for j in range(k)])


class GreedyProcessing:
    """The greedy-path processors of one merged generation config: checked once, bound per prompt."""

    def __init__(self, config: Any, generate_kwargs: Mapping[str, Any], vocab_size: int):
        check_greedy(config, generate_kwargs)
        self.config = config
        self.vocab_size = int(vocab_size)
        probe = greedy_processors(config, torch.zeros(2, dtype=torch.long), 1, self.vocab_size)
        self.names = tuple(type(p).__name__ for p in probe)  # the active processors, in generate's order

    def bind(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> ContextProcessors:
        """The processors of one decode whose prompt is `prompt_ids` [S]."""
        return ContextProcessors(greedy_processors(self.config, prompt_ids.view(-1), max_new_tokens, self.vocab_size),
                                 prompt_ids)

    def __repr__(self) -> str:
        return f"GreedyProcessing({', '.join(self.names)})"


def greedy_processing(model: Any, generate_kwargs: Mapping[str, Any]) -> Optional[GreedyProcessing]:
    """The processors `model.generate(**inputs, **generate_kwargs)` applies on its greedy path (from
    `model.generation_config` merged with the kwargs), or None when it applies none. Raises
    `GenerationConfigError` for a setting the engine cannot reproduce."""
    config = merged_generation_config(model.generation_config, generate_kwargs)
    processing = GreedyProcessing(config, generate_kwargs, model.config.get_text_config().vocab_size)
    return processing if processing.names else None


def bind(processing: Optional[GreedyProcessing], prompt_ids: Optional[torch.Tensor],
         max_new_tokens: int) -> Optional[ContextProcessors]:
    """`processing` bound to a prompt; None (nothing to run) without processing or without the prompt ids."""
    if processing is None or prompt_ids is None:
        return None
    return processing.bind(prompt_ids, max_new_tokens)


def processed(proc: Optional[ContextProcessors], logits: torch.Tensor, emitted: Sequence[int],
              drafts: Sequence[int] = ()) -> torch.Tensor:
    """`logits` [k, V] through `proc` (see `ContextProcessors.__call__`); the same tensor when `proc` is None."""
    return logits if proc is None else proc(logits, emitted, drafts)
