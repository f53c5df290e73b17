"""Every tunable default of the project, in one place, and the typed model-args parser.

`LVSpecArgs` is the flat, typed set of `--model_args` that the lmms-eval backends accept.
It never imports torch: lmms-eval's start-up and `lvspec-report` may import it cheaply.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional

METHODS = ("ar", "sd", "specvlm", "lvspec", "fly", "fly_plus", "random")
#: Methods that must reproduce plain greedy decoding token for token.
LOSSLESS_METHODS = ("ar", "sd", "specvlm")
ANCHOR_RULES = ("rank", "quantile", "target_prob")
ANCHOR_SIDES = ("both", "draft", "target")
RELEVANCE_REPRS = ("embedding", "hidden", "attention")
DTYPES = ("bfloat16", "float16", "float32", "auto")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")

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
#: (`draft_pretrained=self`) always defaults to pruning as well.
PRUNED_BY_DEFAULT = ("specvlm",)


class ArgsError(ValueError):
    """A model argument is unknown or has a bad value; the message says how to fix it."""


@dataclass
class LVSpecArgs:
    """Flat, typed model args shared by every lvspec backend (see the README's table)."""

    pretrained: str = DEFAULT_TARGET
    draft_pretrained: str = DEFAULT_DRAFT
    method: str = "lvspec"
    num_draft_tokens: int = 10  # K
    relax_ratio: float = 0.7  # lambda: share of positions treated as fillers
    top_n: int = 10  # N of the top-N cosine relevance score
    shift_window: int = 2  # w of position-shift tolerance; 0 disables it
    anchor_rule: str = "rank"
    anchor_side: str = "both"
    # attention (this project's): target's attention share on the video in each verify forward; chosen on the
    # testbed (reports/testbed.md); embedding / hidden are the paper's cosine relevance
    relevance_repr: str = "attention"
    relevance_layer: int = -1  # decoder layer for relevance_repr=hidden|attention (negative counts from the end)
    fly_window: int = 6  # W
    fly_entropy: float = 0.3  # nats, entropy of the target's renormalised top-3
    random_accept: float = 0.75  # p of the `random` control
    max_num_frames: int = 32
    fps: Optional[float] = None
    min_pixels: int = 256 * 28 * 28
    max_pixels: int = 1605632
    dtype: str = "bfloat16"
    device_map: Optional[str] = None  # None: "auto" when CUDA is available, else "cpu"; or a JSON map file
    draft_device_map: Optional[str] = None  # None: as device_map (a JSON map file there: "auto"/"cpu")
    offload_folder: Optional[str] = None  # where a device map's "disk" entries are stored
    attn_implementation: Optional[str] = None
    seed: int = 0
    paired_baseline: bool = False
    stats_path: Optional[str] = None  # None: lvspec_runs/<UTC timestamp>_<method>.jsonl
    max_length: Optional[int] = None  # context limit; None: the target config's max_position_embeddings
    # SpecVLM pruning of the drafter's video; None: DEFAULT_DRAFT_VIDEO_KEEP for `specvlm` and Self-SD,
    # 1.0 (no pruning) otherwise; < 1 prunes for any drafting method (e.g. `lvspec`)
    draft_video_keep: Optional[float] = None
    draft_video_mass: float = 0.5  # stage I: attention-mass share covered by top-attention tokens
    draft_video_layer: int = -1  # target decoder layer whose prefill attention ranks video tokens

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
        _choice("dtype", self.dtype, DTYPES)
        if self.attn_implementation is not None:
            _choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _bounded("num_draft_tokens", self.num_draft_tokens, 1, 256)
        _bounded("relax_ratio", self.relax_ratio, 0.0, 1.0)
        _bounded("top_n", self.top_n, 1, 1 << 30)
        _bounded("shift_window", self.shift_window, 0, 256)
        _bounded("fly_window", self.fly_window, 1, 256)
        _bounded("fly_entropy", self.fly_entropy, 0.0, 10.0)
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
            "fly": ("num_draft_tokens", "fly_window", "fly_entropy"),
            "fly_plus": ("num_draft_tokens", "fly_entropy"),
            "random": ("num_draft_tokens", "random_accept", "seed"),
        }[self.method]
        params = {k: getattr(self, k) for k in keys}
        if self.video_keep() < 1.0 or self.method == "specvlm":
            params.update(draft_video_keep=self.video_keep(), draft_video_mass=self.draft_video_mass,
                          draft_video_layer=self.draft_video_layer)
        return params

    def replace(self, **changes: Any) -> "LVSpecArgs":
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new


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
    until: tuple[str, ...] = field(default_factory=tuple)
