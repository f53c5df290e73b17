"""Every tunable default of the project, in one place, and the typed model-args parser.

`LVSpecArgs` is the flat, typed set of `--model_args` that the lmms-eval backends accept.
It never imports torch: lmms-eval's start-up and `lvspec-report` may import it cheaply.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

METHODS = ("ar", "sd", "specvlm", "lvspec", "fly", "fly_plus", "random")
#: Methods that must reproduce plain greedy decoding token for token.
LOSSLESS_METHODS = ("ar", "sd", "specvlm")
ANCHOR_RULES = ("rank", "quantile", "target_prob")
ANCHOR_SIDES = ("both", "draft", "target")
RELEVANCE_REPRS = ("embedding", "hidden", "attention")
DTYPES = ("bfloat16", "float16", "float32", "auto")
#: How a backend treats the task's `until` strings (lmms-eval adds `until=["\n\n"]` to every
#: generate_until task that sets none): `ignore` never reads them (the chat `qwen2_5_vl`);
#: `drop` checks their type (a string or a list) and discards them (the simple `llava_hf`);
#: `honour` stops at the first one the text contains and cuts the answer there; `honour_except_blank_line`
#: the same with "\n\n" removed (the simple `qwen2_5_vl`).
UNTIL_POLICIES = ("ignore", "drop", "honour", "honour_except_blank_line")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
#: FLy's window rule: `amd` as AMD-AGI/FLy's code; `in_block` this project's earlier reading (docs/baselines.md).
FLY_WINDOW_RULES = ("amd", "in_block")
#: FLy's entropy: `full` softmax probabilities of the top-k (AMD-AGI/FLy's code); `top_k` renormalised over them.
FLY_ENTROPY_NORMS = ("full", "top_k")
#: SpecVLM stage II: `linspace` as zju-jiyicheng/SpecVLM's code; `dither` this project's spatial fill.
VIDEO_FILLS = ("linspace", "dither")
#: When the drafter starts (docs/speed.md): `fixed` the paper's (prefilled beside the target, K drafts from the
#: first round); `auto` as `fixed` unless the request's max_new_tokens <= `short_answer_tokens`, where the target
#: decodes one step alone and the drafter starts only if the answer goes on.
DRAFT_SCHEDULES = ("auto", "fixed")
#: `draft_schedule=auto`: the largest max_new_tokens treated as a short-answer request (lmms-eval's multiple-choice
#: tasks ask for 16 or 32 tokens, Video-MME 16; captioning 256 and more).
DEFAULT_SHORT_ANSWER_TOKENS = 32

#: Paper defaults (arXiv 2604.05650): Qwen2.5-VL-32B target drafted by the 7B sibling.
DEFAULT_TARGET = "Qwen/Qwen2.5-VL-32B-Instruct"
DEFAULT_DRAFT = "Qwen/Qwen2.5-VL-7B-Instruct"
#: Paper's second family: LLaVA-OneVision-72B drafted by the 7B sibling (backend `lvspec_llava_ov`).
DEFAULT_LLAVA_OV_TARGET = "llava-hf/llava-onevision-qwen2-72b-ov-hf"
DEFAULT_LLAVA_OV_DRAFT = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
#: Qwen3-VL (backend `lvspec_qwen3_vl`): the largest dense Instruct model drafted by the 4B (about an eighth
#: of its parameters; lmms-eval's own qwen3_vl default checkpoint; docs/qwen3_vl.md says why).
DEFAULT_QWEN3_VL_TARGET = "Qwen/Qwen3-VL-32B-Instruct"
DEFAULT_QWEN3_VL_DRAFT = "Qwen/Qwen3-VL-4B-Instruct"
#: SpecVLM (method.md section 5): share of video tokens the pruned drafter keeps.
DEFAULT_DRAFT_VIDEO_KEEP = 0.1
#: Methods whose drafter sees a pruned video unless `draft_video_keep` says otherwise; Self-SD
#: (`draft_pretrained=self`) always defaults to pruning as well. `lvspec`: the paper's drafter prefills
#: on the SpecVLM-pruned video (method.md section 5); `random`: the paper's control of LVSpec, so the
#: same drafter input; `fly` / `fly_plus` as AMD-AGI/FLy's code, which prunes nothing
#: (docs/method_choices.md says why each).
PRUNED_BY_DEFAULT = ("specvlm", "lvspec", "random")
#: The `params` of a record (rule_params) that describe the drafter's pruned video.
PRUNING_PARAMS = ("draft_video_keep", "draft_video_mass", "draft_video_layer", "draft_video_fill")
#: The `params` of a record (rule_params) that say when the drafter starts (every drafting method's).
SCHEDULE_PARAMS = ("draft_schedule", "short_answer_tokens")


class ArgsError(ValueError):
    """A model argument is unknown or has a bad value; the message says how to fix it."""


#: A built-in backend's generate call for a greedy request: (the task's generation kwargs, max_new_tokens, the
#: tokenizer's eos_token_id, its pad_token_id) -> the kwargs it passes to `model.generate` besides the inputs.
#: `generate` takes every other setting from the checkpoint's generation config (engine/processors.py).
GenerateKwargs = Callable[[dict[str, Any], int, Optional[int], Optional[int]], dict[str, Any]]


def qwen2_5_vl_generate_kwargs(gen_kwargs: dict[str, Any], max_new_tokens: int, eos_token_id: Optional[int],
                               pad_token_id: Optional[int]) -> dict[str, Any]:
    """lmms-eval 0.7.3 chat `qwen2_5_vl` at temperature 0: its defaults under the task's kwargs, do_sample False,
    temperature, top_p and top_k None, the tokenizer's eos and pad ids, the constructor's use_cache=True."""
    return {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id, "do_sample": False, "temperature": None,
            "top_p": None, "num_beams": gen_kwargs.get("num_beams", 1), "max_new_tokens": max_new_tokens,
            "top_k": None, "use_cache": True}


def llava_hf_generate_kwargs(gen_kwargs: dict[str, Any], max_new_tokens: int, eos_token_id: Optional[int],
                             pad_token_id: Optional[int]) -> dict[str, Any]:
    """lmms-eval 0.7.3 simple `llava_hf` at temperature 0: do_sample False, temperature None, the task's top_p and
    num_beams (None and 1 when unset), no top_k, the tokenizer's EOS as eos and pad, use_cache=True."""
    return {"do_sample": False, "temperature": None, "top_p": gen_kwargs.get("top_p"),
            "num_beams": gen_kwargs.get("num_beams", 1), "max_new_tokens": max_new_tokens, "use_cache": True,
            "pad_token_id": eos_token_id, "eos_token_id": eos_token_id}


def qwen3_vl_generate_kwargs(gen_kwargs: dict[str, Any], max_new_tokens: int, eos_token_id: Optional[int],
                             pad_token_id: Optional[int]) -> dict[str, Any]:
    """lmms-eval 0.7.3 `qwen3_vl` (`_build_generate_kwargs` of models/simple/qwen3_vl.py) at temperature 0: the
    tokenizer's eos and pad ids, max_new_tokens, use_cache=True, do_sample False, the task's num_beams (1 when
    unset); temperature, top_p and top_k are left out (the checkpoint's generation config keeps its own)."""
    return {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id, "max_new_tokens": max_new_tokens,
            "use_cache": True, "do_sample": False, "num_beams": gen_kwargs.get("num_beams", 1)}


@dataclass(frozen=True)
class BuiltinDefaults:
    """What a family's built-in lmms-eval backend does with what the user and the task leave unset.

    Each lvspec backend mirrors one built-in (`LVSpecBackend.builtin`), so that `method=ar` returns
    its text; tests/test_builtin_defaults.py reads these values from lmms-eval's own source."""

    backend: str  # the lmms-eval backend mirrored, as users select it (`--model ...`)
    dtype: str  # load dtype when the model args give none (one of DTYPES)
    max_new_tokens: int  # when the task's generation kwargs set none
    until: str  # how the task's `until` strings are treated (one of UNTIL_POLICIES)
    generate_kwargs: GenerateKwargs  # what it passes to `model.generate` (the rest: the checkpoint's generation config)
    # decode's clean_up_tokenization_spaces for the answer text; None: the tokenizer's own setting
    clean_up_spaces: Optional[bool] = None

    @property
    def model(self) -> str:
        """The built-in's `--model` name, by which lmms-eval resolves a task's model-specific prompt."""
        return self.backend.split()[0]


#: lmms-eval 0.7.3 `--model qwen2_5_vl` (the chat class, models/chat/qwen2_5_vl.py): loads bfloat16,
#: max_new_tokens 128, never reads `until`, stops at the tokenizer's EOS, decodes without clean-up.
QWEN2_5_VL_BUILTIN = BuiltinDefaults("qwen2_5_vl", dtype="bfloat16", max_new_tokens=128, until="ignore",
                                     generate_kwargs=qwen2_5_vl_generate_kwargs,
                                     clean_up_spaces=False)
#: lmms-eval 0.7.3 `--model llava_hf --force_simple` (models/simple/llava_hf.py; the chat class crashes
#: on video-only messages): loads dtype "auto", max_new_tokens 1024, pops `until` (a string or a list,
#: else ValueError) without using it, stops at the tokenizer's EOS, decodes with the tokenizer's clean-up.
LLAVA_HF_BUILTIN = BuiltinDefaults("llava_hf --force_simple", dtype="auto", max_new_tokens=1024, until="drop",
                                   generate_kwargs=llava_hf_generate_kwargs,
                                   clean_up_spaces=None)
#: lmms-eval 0.7.3 `--model qwen3_vl` (the chat class, models/chat/qwen3_vl.py over models/simple/qwen3_vl.py):
#: loads bfloat16 (no dtype arg), max_new_tokens 128 (DEFAULT_GEN_KWARGS), never reads `until`, stops at the
#: tokenizer's EOS, decodes without clean-up (and strips nothing unless enable_thinking, which lvspec leaves unset).
QWEN3_VL_BUILTIN = BuiltinDefaults("qwen3_vl", dtype="bfloat16", max_new_tokens=128, until="ignore",
                                   generate_kwargs=qwen3_vl_generate_kwargs, clean_up_spaces=False)
#: The built-in each lvspec backend (lmms-eval model name) mirrors; torch-free for `lvspec-report`.
BACKEND_BUILTINS = {"lvspec_qwen": QWEN2_5_VL_BUILTIN, "lvspec_llava_ov": LLAVA_HF_BUILTIN,
                    "lvspec_qwen3_vl": QWEN3_VL_BUILTIN}


@dataclass(frozen=True)
class LVSpecArgs:
    """Flat, typed model args shared by every lvspec backend (see the README's table).

    Frozen: a method is built from its args once (`lvspec_eval.engine.methods.build_method`);
    another setting is another args object (`replace`)."""

    pretrained: str = DEFAULT_TARGET
    draft_pretrained: str = DEFAULT_DRAFT
    method: str = "lvspec"
    num_draft_tokens: int = 10  # K
    # auto: on a request with max_new_tokens <= short_answer_tokens the drafter starts only once the target's first
    # step shows that the answer goes on (a one-token answer costs what `ar` costs); fixed: the paper's, from prefill
    draft_schedule: str = "auto"
    short_answer_tokens: int = DEFAULT_SHORT_ANSWER_TOKENS
    relax_ratio: float = 0.7  # lambda: share of positions treated as fillers
    top_n: int = 10  # N of the top-N cosine relevance score
    shift_window: int = 2  # w of position-shift tolerance; 0 disables it
    anchor_rule: str = "rank"
    anchor_side: str = "both"
    # embedding: the paper's top-N cosine of the target's input embedding against the projected visual features
    # (method.md section 3); hidden: the same at a decoder layer; attention (this project's, opt-in): the target's
    # attention share on the video in each verify forward
    relevance_repr: str = "embedding"
    relevance_layer: int = -1  # decoder layer for relevance_repr=hidden|attention (negative counts from the end)
    # FLy as AMD-AGI/FLy's code computes it (docs/baselines.md); the `in_block` / `top_k` values are options
    fly_window: int = 6  # W: a mismatch plus W-1 exact draft tokens after it
    fly_window_rule: str = "amd"  # amd: the mismatch may not lie in the block's last W positions; in_block: it may
    fly_entropy: float = 0.3  # nats; the target's top-k entropy must reach it (<= 0.01 turns the gate off)
    fly_entropy_top_k: int = 3  # k of that entropy
    fly_entropy_norm: str = "full"  # full: top-k probabilities of the full softmax; top_k: renormalised over the top-k
    random_accept: float = 0.75  # p of the `random` control
    max_num_frames: int = 32
    fps: Optional[float] = None
    min_pixels: int = 256 * 28 * 28
    max_pixels: int = 1605632
    dtype: Optional[str] = None  # None: the family's built-in default (BuiltinDefaults.dtype)
    device_map: Optional[str] = None  # None: "auto" when CUDA is available, else "cpu"; or a JSON map file
    draft_device_map: Optional[str] = None  # None: as device_map (a JSON map file there: "auto"/"cpu")
    offload_folder: Optional[str] = None  # where a device map's "disk" entries are stored
    attn_implementation: Optional[str] = None
    until_policy: Optional[str] = None  # None: as the family's built-in backend (BuiltinDefaults.until)
    seed: int = 0
    paired_baseline: bool = False
    stats_path: Optional[str] = None  # None: lvspec_runs/<UTC timestamp>_<method>.jsonl
    max_length: Optional[int] = None  # context limit; None: the target config's max_position_embeddings
    # SpecVLM pruning of the drafter's video; None: DEFAULT_DRAFT_VIDEO_KEEP for PRUNED_BY_DEFAULT (specvlm,
    # lvspec, random) and Self-SD, 1.0 (no pruning) otherwise (sd, fly, fly_plus); 1.0 turns it off, < 1 prunes
    # for any drafting method
    draft_video_keep: Optional[float] = None
    # as zju-jiyicheng/SpecVLM's code by default (docs/baselines.md)
    draft_video_mass: float = 0.4  # stage I: attention-mass share covered by top-attention tokens
    draft_video_layer: Optional[int] = None  # None (or "all"): mean over every target decoder layer; an index: that one
    draft_video_fill: str = "linspace"  # stage II: linspace over the rest in prompt order; dither: spatial, per frame

    # ---- parsing -------------------------------------------------------------------------
    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "LVSpecArgs":
        """Build from lmms-eval's parsed `--model_args`; reject unknown names, coerce types."""
        valid = cls.names()
        unknown = sorted(k for k in kwargs if k not in valid)
        if unknown:
            raise ArgsError(
                f"unknown model arg(s) {', '.join(unknown)}; valid model args are: {', '.join(valid)}"
            )
        if str(kwargs.get("draft_video_layer", "")).strip().lower() == "all":  # spelled out: every layer
            kwargs = {**kwargs, "draft_video_layer": None}
        hints = typing.get_type_hints(cls)
        values = {name: _coerce(name, value, hints[name]) for name, value in kwargs.items()}
        args = cls(**values)
        args.validate()
        return args

    def validate(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("anchor_rule", self.anchor_rule, ANCHOR_RULES)
        _choice("anchor_side", self.anchor_side, ANCHOR_SIDES)
        _choice("relevance_repr", self.relevance_repr, RELEVANCE_REPRS)
        if self.dtype is not None:
            _choice("dtype", self.dtype, DTYPES)
        if self.until_policy is not None:
            _choice("until_policy", self.until_policy, UNTIL_POLICIES)
        if self.attn_implementation is not None:
            _choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _bounded("num_draft_tokens", self.num_draft_tokens, 1, 256)
        _choice("draft_schedule", self.draft_schedule, DRAFT_SCHEDULES)
        _bounded("short_answer_tokens", self.short_answer_tokens, 0, 1 << 30)
        _bounded("relax_ratio", self.relax_ratio, 0.0, 1.0)
        _bounded("top_n", self.top_n, 1, 1 << 30)
        _bounded("shift_window", self.shift_window, 0, 256)
        _bounded("fly_window", self.fly_window, 1, 256)
        _choice("fly_window_rule", self.fly_window_rule, FLY_WINDOW_RULES)
        _bounded("fly_entropy", self.fly_entropy, 0.0, 10.0)
        _bounded("fly_entropy_top_k", self.fly_entropy_top_k, 1, 1 << 30)
        _choice("fly_entropy_norm", self.fly_entropy_norm, FLY_ENTROPY_NORMS)
        _bounded("random_accept", self.random_accept, 0.0, 1.0)
        _bounded("max_num_frames", self.max_num_frames, 2, 1 << 20)
        _bounded("min_pixels", self.min_pixels, 1, 1 << 40)
        if self.max_pixels < self.min_pixels:
            raise ArgsError(f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})")
        if self.fps is not None and self.fps <= 0:
            raise ArgsError(f"fps must be > 0 (got {self.fps}); leave it unset to use max_num_frames")
        if self.draft_video_keep is not None and not (0.0 < self.draft_video_keep <= 1.0):
            raise ArgsError(f"draft_video_keep={self.draft_video_keep} is out of range; it must lie in (0, 1] "
                            "(the share of video tokens the drafter keeps; 1 = no pruning)")
        _bounded("draft_video_mass", self.draft_video_mass, 0.0, 1.0)
        _choice("draft_video_fill", self.draft_video_fill, VIDEO_FILLS)
        if not self.pretrained:
            raise ArgsError("pretrained is empty: give a hub name or a local checkpoint folder")
        if self.method != "ar" and not self.draft_pretrained:
            raise ArgsError(f"method={self.method} needs draft_pretrained (a hub name, a local folder, or 'self')")

    def video_keep(self) -> float:
        """Effective share of video tokens the drafter keeps (1.0: no pruning; `ar` drafts nothing)."""
        if self.method == "ar":
            return 1.0
        if self.draft_video_keep is not None:
            return self.draft_video_keep
        pruned = self.method in PRUNED_BY_DEFAULT or self.draft_pretrained == "self"
        return DEFAULT_DRAFT_VIDEO_KEEP if pruned else 1.0

    def rule_params(self) -> dict[str, Any]:
        """The settings that define a decoding method's behaviour (recorded with every sample)."""
        keys = {
            "ar": (),
            "sd": ("num_draft_tokens",),
            "specvlm": ("num_draft_tokens",),
            "lvspec": ("num_draft_tokens", "relax_ratio", "top_n", "shift_window", "anchor_rule",
                       "anchor_side", "relevance_repr", "relevance_layer"),
            "fly": ("num_draft_tokens", "fly_window", "fly_window_rule", "fly_entropy", "fly_entropy_top_k",
                    "fly_entropy_norm"),
            "fly_plus": ("num_draft_tokens", "fly_entropy", "fly_entropy_top_k", "fly_entropy_norm"),
            "random": ("num_draft_tokens", "random_accept", "seed"),
        }[self.method]
        params = {k: getattr(self, k) for k in keys}
        if self.method != "ar":
            params["draft_schedule"] = self.draft_schedule
            if self.draft_schedule == "auto":
                params["short_answer_tokens"] = self.short_answer_tokens
        if self.video_keep() < 1.0 or self.method == "specvlm":
            params.update(draft_video_keep=self.video_keep(), draft_video_mass=self.draft_video_mass,
                          draft_video_layer=self.draft_video_layer,
                          draft_video_fill=self.draft_video_fill)
        return params

    def lossless_counterpart(self) -> Optional["LVSpecArgs"]:
        """The lossless method with the same drafter and drafter input (strict rule), which a loose
        method's tau is compared with: `specvlm` for a pruned separate drafter, `sd` otherwise (also
        Self-SD, pruned or not). None for `ar`, `sd` and `specvlm` (their own reference)."""
        found = lossless_counterpart(self.method, self.rule_params(), self.draft_pretrained)
        if found is None:
            return None
        method, params = found
        return self.replace(method=method, draft_video_keep=params.get("draft_video_keep", 1.0))

    def replace(self, **changes: Any) -> "LVSpecArgs":
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new


def lossless_counterpart(method: str, params: dict[str, Any], draft: Optional[str]) -> Optional[tuple[str, dict]]:
    """(method, params) of the lossless run that a loose run of `method` with `params` (its recorded
    rule_params) and drafter `draft` pairs with: the strict rule on the same drafter input, i.e. the
    same K, the same pruning params and the same draft schedule. `specvlm` when a separate drafter sees a pruned video, `sd`
    otherwise (`draft` "self" is Self-SD: `sd` with the target drafting, pruned or not). None for `ar`
    and the lossless methods, which are their own reference. No torch: the report calls it."""
    if method in LOSSLESS_METHODS:
        return None
    pruning = {k: params[k] for k in PRUNING_PARAMS if k in params}
    schedule = {k: params[k] for k in SCHEDULE_PARAMS if k in params}
    strict = "specvlm" if pruning and draft != "self" else "sd"
    return strict, {"num_draft_tokens": params["num_draft_tokens"], **pruning, **schedule}


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ArgsError(f"{name}={value!r} is not valid; choose one of: {', '.join(options)}")


def _bounded(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ArgsError(f"{name}={value} is out of range; it must lie in [{lo}, {hi}]")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Coerce a CLI value (lmms-eval already turned '3' into 3, 'true' into True) to `hint`."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, inner[0]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ArgsError(f"{name} cannot be empty")
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ArgsError(f"{name}={value!r} is not a valid {hint.__name__}") from None


@dataclass
class DecodeConfig:
    """Per-request settings of one decode (from the task's generation kwargs)."""

    max_new_tokens: int
    eos_ids: tuple[int, ...]
    num_draft_tokens: int = 10
    until: tuple[str, ...] = field(default_factory=tuple)  # stop strings honoured (after the family's policy)
    special_ids: tuple[int, ...] = field(default_factory=tuple)  # verified strictly by every rule (EOS always is)
    # the logits processors of the built-in's greedy generate (engine.processors.GreedyProcessing), run before
    # every argmax; None: a plain argmax (the checkpoint's generation config turns on none)
    processing: Optional[Any] = None
