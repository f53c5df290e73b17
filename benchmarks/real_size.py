"""Real-size speed and memory of this engine: the paper's model pairs at their public configurations
with random weights, a 64-frame synthetic video at the paper's pixel settings, through the engine's
real code path (adapters + `lvspec_eval.engine.decode`).

Per pair (target / drafter) it measures
  1. prefill time of each model on the video prompt (`adapter.start`, device-synchronised);
  2. one-token step time of each model at that context, and their ratio c = drafter / target;
  3. verify time of a K+1 block on the target;
  4. `ar` against every speculative method driven by a SCRIPTED acceptance schedule at the paper's
     tau_excl (method.md section 6: strict 3.28, LVSpec 7.76 (LLaVA-OneVision 7.34), random 7.42):
     the method's real rule, anchor finder and probes run every round, then exactly the scheduled
     number of draft tokens is accepted. Gives the decode speedup THIS engine reaches at those
     acceptances, the engine overhead share (decode time outside model forwards, `profile=True`),
     and beside it Leviathan's prediction (1 - a^(K+1)) / ((1 - a)(K c + 1)) from the measured c
     (a solved from tau) and the cost-model prediction (tau + 1) t_step / (K t_draft + t_verify);
  5. peak memory of each method with the shares of both models' weights and KV caches (GPU:
     torch.cuda.max_memory_allocated in this process, `ar` measured before the drafter exists;
     CPU: peak resident set of a process of its own per method, forked from a server that only imported
     the modules: benchmarks.measure.in_fresh_process). KV bytes are read from each session's
     cache object when the engine closes it (any cache class: every tensor it holds is counted).

A target too large for the device with its drafter (LLaVA-OneVision-72B on one 141 GB GPU) is built
with a stated subset of its decoder layers; its forward costs are measured at two depths and
extrapolated linearly to the full depth, and the engine runs are rescaled with them (shown apart).

Presets:
  paper  GPU, bf16: Qwen2.5-VL-32B-Instruct / 7B and LLaVA-OneVision-72B / 7B (benchmarks/configs/),
         64 frames of 1280x720 (Qwen: lmms-eval qwen2_5_vl pixel bounds min 200704 / max 1605632 per
         frame, capped by qwen-vl-utils at 768 merged tokens per 2-frame slice; LLaVA-OV: its
         processor's 384x384), K = 10, about 256 new tokens.
  tiny   CPU: the same architecture classes with tiny widths, 8 frames of 112x112 (the tests).

Usage:
  python -m benchmarks.real_size --out reports/real_size_h200.md            # one GPU, paper preset (~8 min)
  python -m benchmarks.real_size --tiny --out /tmp/real_size_cpu.md         # CPU, tiny preset (< 1 min)
  python -m benchmarks.real_size --plan                                     # paper preset: models, tokens, memory plan, no weights
Writes the markdown report to --out and the same data as JSON beside it (.json).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional

from testbed.paths import VIDEO_ARGS, default_cache_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks.measure import (CacheMeter, PeakSampler, cost_model, forward_costs, in_fresh_process, leviathan,
                                memory_breakdown, per_token_acceptance, timed, weight_bytes)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: method.md section 6 (greedy, batch 1, prefill excluded): tau_excl per method and pair
PAPER_TAU = {
    "qwen": {"sd": "3.28", "specvlm": "3.28", "lvspec": "7.76", "random": "7.42"},
    # the paper gives LVSpec's 7.34 for LLaVA-OneVision-72B and no strict figure: Qwen's is used
    "llava_ov": {"sd": "3.28", "specvlm": "3.28", "lvspec": "7.34", "random": "7.42"},
}
#: the tiny preset's scripted taus: short cycles that all end at 73 tokens (one `ar` run), same mechanism
TINY_TAU = {pair: {"sd": "3.5", "specvlm": "3.5", "lvspec": "8", "random": "5"} for pair in ("qwen", "llava_ov")}
PAPER_SPEEDUP = {("qwen", "sd"): 1.41, ("qwen", "lvspec"): 2.70, ("llava_ov", "lvspec"): 2.94, ("qwen", "random"): 2.61}
METHODS = ("ar", "sd", "lvspec", "specvlm", "random")  # run in this order (the budget may cut the last ones)
PROMPT = "Please provide a detailed description of the video, focusing on the main subjects, their actions, and the background scenes."
GIB = 2**30


# -- presets ------------------------------------------------------------------------------------

@dataclass
class ModelSpec:
    role: str  # "target" | "drafter"
    name: str  # the checkpoint it stands for
    family: str  # "qwen2_5_vl" | "llava_onevision"
    config: Any  # HF config the model is built from (its text depth may be a subset)
    full_layers: int  # decoder layers of the real checkpoint
    source: str  # where the configuration comes from

    @property
    def layers(self) -> int:
        return int(self.config.get_text_config().num_hidden_layers)


@dataclass
class PairSpec:
    name: str  # "qwen" | "llava_ov"
    target: ModelSpec
    draft: ModelSpec
    video_args: dict[str, Any]  # adapter video settings (frames, pixel bounds)
    processor: Callable[[], Any]
    fit_layers: Optional[int] = None  # a second, smaller target depth for the depth fit (subset targets)


@dataclass
class Preset:
    name: str
    pairs: list[PairSpec]
    frames: int
    height: int
    width: int
    dtype: str
    k: int
    new_tokens: int  # the decode length aimed at (scripted runs end on whole schedule cycles near it)
    taus: dict[str, dict[str, str]] = field(default_factory=lambda: PAPER_TAU)  # scripted tau_excl per pair, method
    methods: tuple[str, ...] = METHODS
    reps: int = 5  # repetitions of each step / verify timing (median)


def load_config(name: str, layers: Optional[int] = None) -> tuple[Any, dict[str, Any]]:
    """An HF config from benchmarks/configs/<name>.json (optionally with fewer decoder layers) and the file's metadata."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    meta = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    raw = dict(meta["config"])
    config = CONFIG_MAPPING[raw["model_type"]].from_dict(raw)
    if layers is not None:
        set_depth(config, layers)
    return config, meta


def set_depth(config: Any, layers: int) -> None:
    text = config.get_text_config()
    text.num_hidden_layers = layers
    if getattr(text, "layer_types", None):  # these models use one layer type throughout
        kinds = list(text.layer_types)
        text.layer_types = (kinds + kinds[-1:] * layers)[:layers]
    if hasattr(text, "max_window_layers"):
        text.max_window_layers = min(int(text.max_window_layers or layers), layers)


def paper_preset(llava_target_layers: Optional[int]) -> Preset:
    from testbed.fixtures.tiny import qwen2_5_vl_processor
    from testbed.fixtures.tiny_llava import tiny_llava_onevision_processor

    def spec(role: str, family: str, file: str, layers: Optional[int] = None) -> ModelSpec:
        config, meta = load_config(file)
        full = int(config.get_text_config().num_hidden_layers)
        if layers is not None and layers < full:
            set_depth(config, layers)
        return ModelSpec(role, meta["model"], family, config, full, meta["source"])

    qwen = PairSpec("qwen", spec("target", "qwen2_5_vl", "qwen2_5_vl_32b_instruct"),
                    spec("drafter", "qwen2_5_vl", "qwen2_5_vl_7b_instruct"),
                    dict(max_num_frames=64, min_pixels=200704, max_pixels=1605632), qwen2_5_vl_processor)
    llava_target = spec("target", "llava_onevision", "llava_onevision_qwen2_72b_ov_hf", llava_target_layers)
    llava = PairSpec("llava_ov", llava_target, spec("drafter", "llava_onevision", "llava_onevision_qwen2_7b_ov_hf"),
                     dict(max_num_frames=64),
                     lambda: tiny_llava_onevision_processor(384, llava_target.config),
                     fit_layers=llava_target.layers // 2 if llava_target.layers < llava_target.full_layers else None)
    return Preset("paper", [qwen, llava], frames=64, height=720, width=1280, dtype="bfloat16", k=10, new_tokens=256)


def tiny_preset() -> Preset:
    """Real architecture classes with tiny widths; the LLaVA-OV target is built at 2 of its 4 layers so
    that the depth extrapolation runs too."""
    from testbed.fixtures.tiny import qwen2_5_vl_processor, tiny_qwen2_5_vl_config
    from testbed.fixtures.tiny_llava import tiny_llava_onevision_config, tiny_llava_onevision_processor
    from testbed.fixtures.tokenizer import PADDED_EMBEDDING_ROWS

    source = "testbed.fixtures tiny configuration (real classes, tiny widths)"
    qwen = PairSpec("qwen",
                    ModelSpec("target", "tiny Qwen2.5-VL (hidden 128)", "qwen2_5_vl",
                              tiny_qwen2_5_vl_config(hidden=128, layers=4), 4, source),
                    ModelSpec("drafter", "tiny Qwen2.5-VL (hidden 64)", "qwen2_5_vl",
                              tiny_qwen2_5_vl_config(hidden=64, layers=2), 2, source),
                    dict(VIDEO_ARGS), qwen2_5_vl_processor)
    llava_config = tiny_llava_onevision_config(hidden=128, layers=2)
    llava = PairSpec("llava_ov",
                     ModelSpec("target", "tiny LLaVA-OneVision (hidden 128)", "llava_onevision", llava_config, 4, source),
                     ModelSpec("drafter", "tiny LLaVA-OneVision (hidden 64)", "llava_onevision",
                               tiny_llava_onevision_config(hidden=64, layers=2, vocab_size=PADDED_EMBEDDING_ROWS), 2,
                               source),
                     dict(max_num_frames=VIDEO_ARGS["max_num_frames"]), lambda: tiny_llava_onevision_processor(112, llava_config), fit_layers=1)
    return Preset("tiny", [qwen, llava], frames=8, height=112, width=112, dtype="float32", k=10, new_tokens=73,
                  taus=TINY_TAU, reps=3)


# -- models, inputs -------------------------------------------------------------------------------

def adapter_class(family: str) -> Any:
    from lvspec_eval.adapters.llava_onevision import LlavaOnevisionAdapter
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter

    return {"qwen2_5_vl": QwenVLAdapter, "llava_onevision": LlavaOnevisionAdapter}[family]


def model_class(family: str) -> Any:
    import transformers

    name = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
            "llava_onevision": "LlavaOnevisionForConditionalGeneration"}[family]
    return getattr(transformers, name)


def build_adapter(spec: ModelSpec, pair: PairSpec, processor: Any, device: str, dtype: str, seed: int) -> Any:
    """Random weights created directly on `device` in `dtype` (no host copy of the weights)."""
    import torch

    from lvspec_eval.adapters.loading import resolve_dtype

    torch.manual_seed(seed)
    with torch.device(device):
        model = model_class(spec.family)._from_config(spec.config, dtype=resolve_dtype(dtype))
    model.eval()
    return adapter_class(spec.family)(model, processor, f"random {spec.name}", **pair.video_args)


def meta_model(spec: ModelSpec, layers: Optional[int] = None) -> Any:
    """The model on the meta device (shapes only) at `layers` decoder layers (default: as built)."""
    import copy

    import torch

    config = copy.deepcopy(spec.config)
    if layers is not None:
        set_depth(config, layers)
    with torch.device("meta"):
        return model_class(spec.family)._from_config(config, dtype=torch.bfloat16)


def param_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def write_video(path: Path, frames: int, height: int, width: int) -> Path:
    """A deterministic synthetic clip: moving shapes over a slowly changing gradient, H.264."""
    import numpy as np

    from testbed.fixtures.video import write_mp4

    if path.is_file():
        return path
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 5)
    for i in range(frames):
        base = (xx * 255 // max(1, width - 1) + 3 * i) % 256
        out[i, ..., 0] = base
        out[i, ..., 1] = (yy * 255 // max(1, height - 1)) % 256
        out[i, ..., 2] = (base // 2 + 64) % 256
        x = (i * max(1, width // 32)) % max(1, width - side)
        y = (i * max(1, height // 24)) % max(1, height - side)
        out[i, y:y + side, x:x + side] = (250, 40, 40)
        cx, cy = width - 1 - x - side // 2, height - 1 - y - side // 2
        out[i][(xx - cx) ** 2 + (yy - cy) ** 2 <= (side // 2) ** 2] = (40, 220, 60)
    return write_mp4(path, out, fps=8)


def prepare_inputs(adapter: Any, video: Path) -> dict[str, Any]:
    clip = str(video)
    messages = [{"role": "user", "content": [{"type": "video", "video": clip, **adapter.video_kwargs([clip])},
                                             {"type": "text", "text": PROMPT}]}]
    return adapter.prepare(messages)


def text_inputs(adapter: Any) -> dict[str, Any]:
    return adapter.prepare([{"role": "user", "content": [{"type": "text", "text": "Hello."}]}])


def video_token_count(adapter: Any, inputs: dict[str, Any]) -> int:
    ids = inputs["input_ids"][0]
    if "mm_token_type_ids" in inputs:
        return int((inputs["mm_token_type_ids"][0] == 2).sum())
    return int((ids == adapter.video_token_id).sum())


# -- the method, as the shared builder makes it ---------------------------------------------------------

def decode_method(args: Any, target: Any, draft: Optional[Any], inputs: dict[str, Any], cfg: Any, *,
                  schedule: Optional[list[int]] = None, seed: int = 0, profile: bool = True) -> Any:
    """Decode one sample with `args.method` as the lmms-eval backend runs it (`build_method`: rule,
    SpecVLM pruning, anchor finder, relevance capture/probe layers), with the rule wrapped in a
    `ScriptedRule` when `schedule` is given (the real rule, anchors and probes still run every round)."""
    import dataclasses

    from lvspec_eval.engine import build_method
    from testbed.fixtures.scripted import ScriptedRule

    method = build_method(args)
    if schedule is not None and method.drafts:
        method = dataclasses.replace(method, rule=ScriptedRule(schedule, inner=method.rule))
    return method.decode(target, draft, inputs, cfg, seed=seed, profile=profile)


def method_args(method: str) -> Any:
    from lvspec_eval.config import LVSpecArgs

    return LVSpecArgs(method=method, pretrained="random", draft_pretrained="random")


# -- measurement primitives --------------------------------------------------------------------------

class Budget:
    def __init__(self, minutes: float):
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + 60.0 * minutes
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, estimate_s: float, stage: str) -> bool:
        if estimate_s <= self.left():
            return True
        self.skipped.append(f"{stage} (needs about {estimate_s:.0f} s, {max(0.0, self.left()):.0f} s left)")
        log(self, f"SKIPPED {self.skipped[-1]}")
        return False


def log(budget: Budget, message: str) -> None:
    print(f"[real_size {budget.elapsed():6.1f}s] {message}", flush=True)


def warm_up(adapter: Any) -> None:
    """First kernels, handles and allocator pools, on a short text prompt (kept out of the timings)."""
    import torch

    session, _ = adapter.start(text_inputs(adapter))
    session.extend(torch.tensor([1000]))
    session.extend(torch.tensor([1000] * 11))
    session.close()


@contextlib.contextmanager
def shallower(adapter: Any, layers: int):
    """Run `adapter`'s model with only its first `layers` decoder layers (for the depth fit)."""
    import torch

    inner = adapter.model.model.language_model
    text = adapter.model.config.get_text_config()
    saved = (inner.layers, text.num_hidden_layers, getattr(text, "layer_types", None))
    inner.layers = torch.nn.ModuleList(list(saved[0])[:layers])
    text.num_hidden_layers = layers
    if saved[2]:
        text.layer_types = list(saved[2])[:layers]
    try:
        yield
    finally:
        inner.layers, text.num_hidden_layers = saved[0], saved[1]
        if saved[2]:
            text.layer_types = saved[2]


def extrapolate(at: dict[int, float], full: int) -> float:
    """Linear in depth through two measured depths: t(L) = t(a) + (L - a)(t(b) - t(a)) / (b - a)."""
    (a, ta), (b, tb) = sorted(at.items())
    return tb + (full - b) * (tb - ta) / (b - a)


def decode_config(new_tokens: int, k: int) -> Any:
    from lvspec_eval.config import DecodeConfig

    return DecodeConfig(max_new_tokens=new_tokens, eos_ids=(), num_draft_tokens=k)  # random weights: no EOS stop


def run_summary(res: Any) -> dict[str, Any]:
    inside = res.draft_forward_s + res.target_forward_s
    return {"new_tokens": len(res.tokens), "rounds": res.rounds, "proposed": res.proposed, "accepted": res.accepted,
            "tau_excl": res.accepted / res.rounds if res.rounds else 0.0,
            "prefill_s": res.prefill_s, "decode_s": res.decode_s,
            "target_forward_s": res.target_forward_s, "draft_forward_s": res.draft_forward_s,
            "overhead_share": (res.decode_s - inside) / res.decode_s if res.decode_s else 0.0}


# -- one pair --------------------------------------------------------------------------------------

def schedules(pair: PairSpec, preset: Preset) -> dict[str, dict[str, Any]]:
    """Per speculative method: the paper's tau, its acceptance schedule and the decode length that
    ends on whole schedule cycles (so the run's tau_excl equals the paper's exactly)."""
    from testbed.fixtures.scripted import acceptance_schedule, scripted_new_tokens

    out = {}
    for method in preset.methods:
        if method == "ar":
            continue
        tau = preset.taus[pair.name][method]
        schedule = acceptance_schedule(tau, preset.k)
        out[method] = {"tau": tau, "schedule": schedule, "new_tokens": scripted_new_tokens(schedule, preset.new_tokens)}
    return out


def guarded(out: dict[str, Any], stage: str, budget: Budget, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) for one stage; running out of device memory becomes a note and None (the other stages go on)."""
    import torch

    try:
        return fn(*args)
    except torch.OutOfMemoryError as exc:
        out["notes"].append(f"{stage}: out of device memory ({str(exc).splitlines()[0][:160]})")
        log(budget, f"OUT OF MEMORY in {stage}; going on with the next stage")
        gc.collect()
        torch.cuda.empty_cache()
        return None


def measure_pair(pair: PairSpec, preset: Preset, video: Path, device: str, budget: Budget,
                 cuda_memory: bool) -> dict[str, Any]:
    """Everything about one pair, each model built once: target first (its costs, `ar`), then the drafter."""
    import torch

    out: dict[str, Any] = {"pair": pair.name, "models": {}, "costs": {}, "runs": {}, "memory": {}, "notes": []}
    processor = pair.processor()
    plans = schedules(pair, preset)

    log(budget, f"{pair.name}: building the target {pair.target.name} ({pair.target.layers}/{pair.target.full_layers} "
                f"layers) on {device}, {preset.dtype}")
    target, build_s = timed(None, lambda: build_adapter(pair.target, pair, processor, device, preset.dtype, seed=0))
    inputs, prep_s = timed(None, lambda: prepare_inputs(target, video))
    out["models"]["target"] = model_info(pair.target, target, build_s)
    out["video"] = {"frames": preset.frames, "height": preset.height, "width": preset.width,
                    "video_tokens": video_token_count(target, inputs), "prompt_tokens": int(inputs["input_ids"].shape[-1]),
                    "processor_s": prep_s, **{k: v for k, v in pair.video_args.items()}}
    log(budget, f"{pair.name}: target built in {build_s:.1f} s; prompt {out['video']['prompt_tokens']} tokens "
                f"({out['video']['video_tokens']} video) prepared in {prep_s:.1f} s")
    warm_up(target)
    costs = guarded(out, f"{pair.name} target forwards", budget, forward_costs, target, inputs, preset.k, preset.reps)
    if costs is None:
        return out
    out["costs"]["target"] = costs
    log(budget, f"{pair.name}: target prefill {costs['prefill_s']:.3f} s, step {1e3 * costs['step_s']:.2f} ms, "
                f"verify K+1 {1e3 * costs['verify_s']:.2f} ms")
    if pair.fit_layers:
        with shallower(target, pair.fit_layers):
            fit = forward_costs(target, inputs, preset.k, preset.reps)
        out["costs"]["target_fit"] = {"layers": pair.fit_layers, **fit}
        full = {key: extrapolate({pair.fit_layers: fit[key], pair.target.layers: costs[key]}, pair.target.full_layers)
                for key in ("prefill_s", "step_s", "verify_s")}
        full["kv_bytes_prefill"] = costs["kv_bytes_prefill"] * pair.target.full_layers / pair.target.layers
        out["costs"]["target_full"] = full
        log(budget, f"{pair.name}: at {pair.fit_layers} layers step {1e3 * fit['step_s']:.2f} ms; extrapolated to "
                    f"{pair.target.full_layers} layers: prefill {full['prefill_s']:.3f} s, step {1e3 * full['step_s']:.2f} ms")

    def run_ar(n: int, record_memory: bool) -> None:
        """`ar` at the decode length n of a scripted run (memory only before the drafter is built)."""
        if f"ar@{n}" in out["runs"] or not budget.allows(costs["prefill_s"] + n * costs["step_s"] * 1.3,
                                                          f"{pair.name} ar ({n} tokens)"):
            return
        done = guarded(out, f"{pair.name} ar", budget, metered_decode, "ar", target, None, inputs, n, preset, None,
                       cuda_memory and record_memory)
        if done is not None:
            res, mem = done
            out["runs"][f"ar@{n}"] = run_summary(res)
            if mem:
                out["memory"]["ar"] = mem
            log(budget, f"{pair.name}: ar {n} tokens: decode {res.decode_s:.3f} s "
                        f"({1e3 * res.decode_s / max(1, res.rounds):.2f} ms/token)")

    if plans:  # the first length now, with only the target resident; the others beside their method
        run_ar(next(iter(plans.values()))["new_tokens"], record_memory=True)

    log(budget, f"{pair.name}: building the drafter {pair.draft.name}")
    built = guarded(out, f"{pair.name} drafter build", budget, timed, None,
                    lambda: build_adapter(pair.draft, pair, processor, device, preset.dtype, seed=1))
    dcosts = None
    if built is not None:
        draft, build_s = built
        out["models"]["drafter"] = model_info(pair.draft, draft, build_s)
        warm_up(draft)
        dcosts = guarded(out, f"{pair.name} drafter forwards", budget, forward_costs, draft, inputs, preset.k, preset.reps)
    if dcosts is not None:
        out["costs"]["drafter"] = dcosts
        log(budget, f"{pair.name}: drafter built in {build_s:.1f} s; prefill {dcosts['prefill_s']:.3f} s, "
                    f"step {1e3 * dcosts['step_s']:.2f} ms (c = {dcosts['step_s'] / costs['step_s']:.3f})")
        for method, plan in plans.items():
            rounds = plan["new_tokens"] / (1 + float(Fraction(plan["tau"])))
            estimate = (costs["prefill_s"] + dcosts["prefill_s"]
                        + rounds * (preset.k * dcosts["step_s"] + costs["verify_s"]) * 1.5)
            if not budget.allows(estimate, f"{pair.name} {method}"):
                continue
            run_ar(plan["new_tokens"], record_memory=False)
            done = guarded(out, f"{pair.name} {method}", budget, metered_decode, method, target, draft, inputs,
                           plan["new_tokens"], preset, plan["schedule"], cuda_memory)
            if done is None:
                continue
            res, mem = done
            out["runs"][method] = {**run_summary(res), "scripted_tau": plan["tau"], "schedule_cycle": len(plan["schedule"])}
            if mem:
                out["memory"][method] = mem
            log(budget, f"{pair.name}: {method} at tau {plan['tau']}: {len(res.tokens)} tokens in {res.rounds} rounds, "
                        f"decode {res.decode_s:.3f} s, overhead {100 * out['runs'][method]['overhead_share']:.1f}%")
    target = draft = built = inputs = None  # free the pair before the next one
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def model_info(spec: ModelSpec, adapter: Any, build_s: float) -> dict[str, Any]:
    info = {"name": spec.name, "family": spec.family, "source": spec.source, "layers_built": spec.layers,
            "layers_full": spec.full_layers, "params_built": param_count(adapter.model),
            "weight_bytes_built": weight_bytes(adapter), "build_s": build_s, "dtype": str(adapter.model.dtype)}
    if spec.layers < spec.full_layers:
        full = param_count(meta_model(spec, spec.full_layers))
        info["params_full"] = full
        info["weight_bytes_full"] = full * adapter.model.dtype.itemsize
    else:
        info["params_full"], info["weight_bytes_full"] = info["params_built"], info["weight_bytes_built"]
    text = spec.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    info["kv_bytes_per_token_full"] = 2 * spec.full_layers * text.num_key_value_heads * head_dim * adapter.model.dtype.itemsize
    return info


def metered_decode(method: str, target: Any, draft: Optional[Any], inputs: dict[str, Any], new_tokens: int,
                   preset: Preset, schedule: Optional[list[int]], cuda_memory: bool) -> tuple[Any, Optional[dict]]:
    """One decode through `decode_method`, with its KV caches metered and, on CUDA, its peak allocated memory."""
    import torch

    t_meter, d_meter = CacheMeter(target), (CacheMeter(draft) if draft is not None and method != "ar" else None)
    if cuda_memory:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    res = decode_method(method_args(method), t_meter, d_meter, inputs, decode_config(new_tokens, preset.k),
                        schedule=schedule)
    if not cuda_memory:
        return res, None
    peak = torch.cuda.max_memory_allocated()
    # `ar` runs before the drafter is built: the drafter's weights are not resident then
    return res, memory_breakdown(peak, target, d_meter.adapter if d_meter else None, t_meter.bytes,
                                 d_meter.bytes if d_meter else 0, unit="allocated", new_tokens=len(res.tokens))


# -- CPU memory: one process of its own per method --------------------------------------------------------

#: What the memory processes' server imports once (the models' classes, the adapters, the engine).
MEMORY_PRELOAD = ("torch", "transformers", "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
                  "transformers.models.llava_onevision.modeling_llava_onevision", "lvspec_eval.adapters.qwen2_5_vl",
                  "lvspec_eval.adapters.llava_onevision", "lvspec_eval.engine.loop")


def memory_child(job: dict[str, Any]) -> dict[str, Any]:
    """In a process of its own (benchmarks.measure.in_fresh_process): baseline RSS, build what `method`
    needs, decode once under a 1 ms RSS sampler (benchmarks.measure.PeakSampler)."""
    preset = build_preset(job["preset"], job.get("llava_target_layers"))
    pair = next(p for p in preset.pairs if p.name == job["pair"])
    sampler = PeakSampler(cuda=False)
    baseline = sampler.now()
    processor = pair.processor()
    target = build_adapter(pair.target, pair, processor, "cpu", preset.dtype, seed=0)
    draft = None if job["method"] == "ar" else build_adapter(pair.draft, pair, processor, "cpu", preset.dtype, seed=1)
    inputs = prepare_inputs(target, Path(job["video"]))
    t_meter, d_meter = CacheMeter(target), (CacheMeter(draft) if draft is not None else None)
    gc.collect()
    with PeakSampler(cuda=False) as peak:
        res = decode_method(method_args(job["method"]), t_meter, d_meter, inputs,
                            decode_config(job["new_tokens"], preset.k), schedule=job.get("schedule"), profile=False)
    return memory_breakdown(int(peak.peak * 2**20), target, draft, t_meter.bytes, d_meter.bytes if d_meter else 0,
                            unit="resident set", baseline=int(baseline * 2**20), new_tokens=len(res.tokens))


def cpu_memory(pair: PairSpec, preset: Preset, video: Path, llava_target_layers: Optional[int], budget: Budget) -> dict:
    out = {}
    plans = schedules(pair, preset)
    for method in preset.methods:
        plan = plans.get(method, {"new_tokens": max([p["new_tokens"] for p in plans.values()] or [preset.new_tokens]),
                                  "schedule": None})
        job = {"preset": preset.name, "pair": pair.name, "method": method, "video": str(video),
               "new_tokens": plan["new_tokens"], "schedule": plan["schedule"], "llava_target_layers": llava_target_layers}
        if not budget.allows(5.0, f"{pair.name} {method} memory process"):
            continue
        try:
            out[method] = in_fresh_process(memory_child, job, preload=MEMORY_PRELOAD)
        except Exception as exc:
            raise RuntimeError(f"memory process for {pair.name} {method} failed: {exc!r}") from exc
        log(budget, f"{pair.name}: {method} peak resident set {out[method]['peak'] / 2**20:.1f} MiB (own process)")
    return out


# -- derived figures and the report --------------------------------------------------------------------

def derive(result: dict[str, Any], k: int) -> None:
    """Speedups, predictions and full-depth rescaling of one pair's result (in place)."""
    costs = result["costs"]
    t, d = costs["target"], costs.get("drafter")
    full = costs.get("target_full")
    result["c"] = d["step_s"] / t["step_s"] if d else None
    if full and d:
        result["c_full"] = d["step_s"] / full["step_s"]
    rows = []
    for method, run in result["runs"].items():
        if method.startswith("ar@") or d is None:
            continue
        ar = result["runs"].get(f"ar@{run['new_tokens']}")
        tau = float(Fraction(run["scripted_tau"]))
        a = per_token_acceptance(tau, k)
        row = {"method": method, "scripted_tau": run["scripted_tau"], "tau_excl": run["tau_excl"],
               "paper_tau": PAPER_TAU[result["pair"]].get(method),
               "tau_exact": Fraction(run["accepted"], run["rounds"]) == Fraction(run["scripted_tau"]),
               "new_tokens": run["new_tokens"], "rounds": run["rounds"], "decode_s": run["decode_s"],
               "overhead_share": run["overhead_share"], "a": a,
               "leviathan": leviathan(a, k, result["c"]),
               "cost_model": cost_model(tau, k, t["step_s"], d["step_s"], t["verify_s"]),
               "paper_speedup": PAPER_SPEEDUP.get((result["pair"], method))}
        if ar:
            row.update(ar_decode_s=ar["decode_s"], speedup_decode=ar["decode_s"] / run["decode_s"],
                       speedup_e2e=(ar["prefill_s"] + ar["decode_s"]) / (run["prefill_s"] + run["decode_s"]),
                       ar_overhead_share=ar["overhead_share"])
        if full and ar:  # rescale the subset target's forwards to the full depth
            ar_full = ar["decode_s"] + ar["rounds"] * (full["step_s"] - t["step_s"])
            run_full = run["decode_s"] + run["rounds"] * (full["verify_s"] - t["verify_s"])
            row.update(speedup_decode_full=ar_full / run_full,
                       leviathan_full=leviathan(a, k, result["c_full"]),
                       cost_model_full=cost_model(tau, k, full["step_s"], d["step_s"], full["verify_s"]))
        rows.append(row)
    result["speed"] = rows
    for mem in result["memory"].values():
        mem["shares"] = {key: mem[key] / mem["peak"] for key in
                         ("target_weights", "draft_weights", "target_kv", "draft_kv", "other")}
        base = result["memory"].get("ar")
        mem["vs_ar"] = mem["peak"] - base["peak"] if base else None
        tinfo = result["models"]["target"]
        if tinfo["layers_built"] < tinfo["layers_full"]:
            scale = tinfo["layers_full"] / tinfo["layers_built"]
            mem["peak_full_estimate"] = (mem["peak"] + tinfo["weight_bytes_full"] - tinfo["weight_bytes_built"]
                                         + mem["target_kv"] * (scale - 1))


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    if abs(n) >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if abs(n) >= 2**20 else f"{n / 2**10:.1f} KiB"


def tables(data: dict[str, Any]) -> list[tuple[str, str]]:
    from tabulate import tabulate

    out = []
    rows = []
    for r in data["pairs"]:
        for role in ("target", "drafter"):
            m = r["models"].get(role)
            if not m:
                continue
            rows.append([r["pair"], role, m["name"], f"{m['layers_built']}/{m['layers_full']}",
                         f"{m['params_built'] / 1e9:.3f}B", f"{m['params_full'] / 1e9:.3f}B", fmt_bytes(m["weight_bytes_built"]),
                         fmt_bytes(m["kv_bytes_per_token_full"]), f"{m['build_s']:.1f}"])
    out.append(("Models (random weights from the public configurations)", tabulate(
        rows, headers=["pair", "role", "model", "layers built/full", "params built", "params full", "weights built",
                       "KV/token (full)", "build s"], tablefmt="github")))
    rows = [[r["pair"], r["video"]["frames"], f"{r['video']['width']}x{r['video']['height']}", r["video"]["video_tokens"],
             r["video"]["prompt_tokens"], f"{r['video']['processor_s']:.1f}"] for r in data["pairs"] if "video" in r]
    out.append(("Input (synthetic video through the adapters' processors)", tabulate(
        rows, headers=["pair", "frames", "source size", "video tokens", "prompt tokens", "processor s"], tablefmt="github")))
    rows = []
    for r in data["pairs"]:
        c = r["costs"]
        for label, key in (("target", "target"), ("target, fit depth", "target_fit"), ("target, full depth (extrapolated)",
                                                                                       "target_full"), ("drafter", "drafter")):
            if key not in c:
                continue
            x = c[key]
            layers = x.get("layers", "")
            rows.append([r["pair"], f"{label}{f' ({layers} layers)' if layers else ''}", f"{x['prefill_s']:.3f}",
                         f"{1e3 * x['step_s']:.2f}", f"{1e3 * x['verify_s']:.2f}", f"{x['verify_s'] / x['step_s']:.2f}",
                         fmt_bytes(x["kv_bytes_prefill"])])
        if r.get("c") is not None:
            rows.append([r["pair"], "c = drafter step / target step", "", f"{r['c']:.3f}"
                         + (f" (full depth {r['c_full']:.3f})" if r.get("c_full") else ""), "", "", ""])
    out.append((f"Forward costs at the video context (median of {data['config']['reps']}; K = {data['config']['k']})", tabulate(
        rows, headers=["pair", "model", "prefill s", "step ms", "verify K+1 ms", "verify/step", "KV after prefill"],
        tablefmt="github")))
    rows = []
    for r in data["pairs"]:
        for s in r.get("speed", []):
            rows.append([r["pair"], s["method"], s["paper_tau"], s["scripted_tau"],
                         f"{s['tau_excl']:.4f}" + ("" if s["tau_exact"] else " (!)"),
                         s["new_tokens"], s["rounds"], f"{s.get('ar_decode_s', float('nan')):.3f}", f"{s['decode_s']:.3f}",
                         _x(s.get("speedup_decode")), _x(s.get("speedup_e2e")), _x(s["leviathan"]), _x(s["cost_model"]),
                         _x(s.get("speedup_decode_full")), _x(s.get("leviathan_full")), _x(s.get("paper_speedup")),
                         f"{100 * s['overhead_share']:.1f}%", f"{100 * s.get('ar_overhead_share', float('nan')):.1f}%"])
    out.append(("Speed at the paper's acceptance (scripted schedule; decode excludes prefill)", tabulate(
        rows, headers=["pair", "method", "paper tau", "scripted tau", "tau_excl run", "tokens", "rounds", "ar decode s", "decode s",
                       "speedup", "speedup e2e", "Leviathan (c)", "cost model", "speedup full depth",
                       "Leviathan full depth", "paper speedup", "engine overhead", "ar overhead"], tablefmt="github")))
    rows = []
    for r in data["pairs"]:
        for method, m in r.get("memory", {}).items():
            sh = m["shares"]
            rows.append([r["pair"], method, m["unit"], fmt_bytes(m["peak"]), fmt_bytes(m["vs_ar"]) if m["vs_ar"] is not None else "-",
                         f"{fmt_bytes(m['target_weights'])} ({100 * sh['target_weights']:.1f}%)",
                         f"{fmt_bytes(m['draft_weights'])} ({100 * sh['draft_weights']:.1f}%)",
                         f"{fmt_bytes(m['target_kv'])} ({100 * sh['target_kv']:.1f}%)",
                         f"{fmt_bytes(m['draft_kv'])} ({100 * sh['draft_kv']:.1f}%)",
                         f"{fmt_bytes(m['other'])} ({100 * sh['other']:.1f}%)",
                         fmt_bytes(m.get("peak_full_estimate"))])
    out.append(("Peak memory per method (shares of the peak; other = peak - weights - KV caches)", tabulate(
        rows, headers=["pair", "method", "measure", "peak", "peak - ar", "target weights", "drafter weights", "target KV",
                       "drafter KV", "other", "peak at full depth (est.)"], tablefmt="github")))
    return out


def _x(v: Optional[float]) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}x"


def write_report(data: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    env = data["environment"]
    lines = [f"# Real-size benchmark: {data['config']['preset']} preset on {env['device_name']}", "",
             f"Command: `{data['command']}`", "",
             f"{env['device_name']} ({env['device']}), torch {env['torch']}, transformers {env['transformers']}, "
             f"{data['config']['dtype']}, K = {data['config']['k']}; {data['elapsed_s']:.0f} s in all "
             f"(budget {data['config']['budget_minutes']} min).", "",
             "Random weights from the public configurations (benchmarks/configs/), one synthetic video, greedy, batch 1, "
             "no EOS stop. Speculative runs accept exactly the scheduled number of draft tokens per round "
             "(testbed/fixtures/scripted.py: ScriptedRule around the method's real rule), so tau_excl equals the scripted "
             "figure (the paper preset: the paper's) and the speedup is what THIS engine reaches at that acceptance. Leviathan: (1 - a^(K+1)) / "
             "((1 - a)(K c + 1)) with a solved from tau and the measured c; cost model: (tau + 1) t_step / "
             "(K t_draft + t_verify). Engine overhead: decode time outside model forwards. Definitions: docs/benchmarks.md.",
             ""]
    notes = data["notes"] + [n for r in data["pairs"] for n in r["notes"]]
    for note in notes + [f"Skipped for the time budget: {s}" for s in data["skipped"]]:
        lines.append(f"- {note}")
    for title, text in tables(data):
        lines += ["", f"## {title}", "", text]
    out.write_text("\n".join(lines) + "\n")


# -- main ------------------------------------------------------------------------------------------

def build_preset(name: str, llava_target_layers: Optional[int]) -> Preset:
    return tiny_preset() if name == "tiny" else paper_preset(llava_target_layers)


def auto_llava_layers(device_bytes: int, video_tokens: int = 12545, margin_gib: float = 24.0) -> int:
    """Deepest even LLaVA-OneVision-72B target (decoder layers) that fits `device_bytes` beside its 7B
    drafter in bf16 with `margin_gib` left for activations and the allocator (80 = the whole model)."""
    spec_t = paper_preset(None).pairs[1].target
    spec_d = paper_preset(None).pairs[1].draft
    fixed = param_count(meta_model(spec_t, 0)) * 2
    per_layer = (param_count(meta_model(spec_t, 2)) * 2 - fixed) / 2
    draft = param_count(meta_model(spec_d)) * 2
    text = spec_t.config.get_text_config()
    kv_layer = 2 * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 2 * (video_tokens + 512)
    dt = spec_d.config.get_text_config()
    draft_kv = 2 * dt.num_hidden_layers * dt.num_key_value_heads * (dt.hidden_size // dt.num_attention_heads) * 2 * (video_tokens + 512)
    free = device_bytes - margin_gib * GIB - fixed - draft - draft_kv
    layers = int(free // (per_layer + kv_layer))
    return max(2, min(spec_t.full_layers, layers - layers % 2))


def plan(args: argparse.Namespace) -> None:
    """The paper preset without weights: parameter counts, KV per token, prompt tokens from the real
    processors on the 64-frame video, and the memory each pair needs (checked on the CPU)."""
    import torch
    from tabulate import tabulate

    device_bytes = (torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else int(args.device_memory_gib * GIB))
    layers = args.llava_target_layers or auto_llava_layers(device_bytes)
    preset = paper_preset(layers)
    video = write_video(Path(args.cache) / "real_size" / f"video_{preset.frames}x{preset.width}x{preset.height}.mp4",
                        preset.frames, preset.height, preset.width)
    rows = []
    for pair in preset.pairs:
        processor = pair.processor()
        tokens = None
        for spec in (pair.target, pair.draft):
            model = meta_model(spec)
            if tokens is None:  # the adapter prepares inputs without weights (processor only)
                tokens = int(prepare_inputs(adapter_class(spec.family)(model, processor, spec.name, **pair.video_args),
                                            video)["input_ids"].shape[-1])
            full = param_count(meta_model(spec, spec.full_layers))
            text = spec.config.get_text_config()
            kv = 2 * spec.full_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 2
            built = param_count(model)
            rows.append([pair.name, spec.role, spec.name, f"{spec.layers}/{spec.full_layers}", f"{full / 1e9:.2f}B",
                         fmt_bytes(full * 2), fmt_bytes(built * 2), tokens, fmt_bytes(kv),
                         fmt_bytes(kv * (tokens + preset.new_tokens) * spec.layers / spec.full_layers)])
    print(f"Paper preset plan ({fmt_bytes(device_bytes)} device memory; LLaVA-OneVision-72B target at {layers}/80 layers)")
    print(tabulate(rows, headers=["pair", "role", "model", "layers built/full", "params", "weights full", "weights built",
                                  "prompt tokens", "KV/token", "KV at prompt+256 (built)"], tablefmt="github"))


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    p.add_argument("--tiny", action="store_true", help="same as --preset tiny (CPU, tiny widths)")
    p.add_argument("--out", help="markdown report to write (the JSON goes beside it); default reports/real_size_<device>.md")
    p.add_argument("--pairs", default="qwen,llava_ov", help="comma-separated: qwen, llava_ov")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)} (ar always runs)")
    p.add_argument("--device", default=None, help="cuda:0 / cpu (default: cuda when available)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="stop starting new stages past this (default 8)")
    p.add_argument("--llava-target-layers", type=int, default=None,
                   help="decoder layers of the LLaVA-OneVision-72B target to build (default: the most that fit)")
    p.add_argument("--new-tokens", type=int, default=None, help="decode length aimed at (default 256)")
    p.add_argument("--plan", action="store_true", help="paper preset: models, tokens and memory plan, no weights")
    p.add_argument("--device-memory-gib", type=float, default=139.0, help="device memory assumed by --plan without a GPU")
    p.add_argument("--cache", default=str(default_cache_root()))
    args = p.parse_args(argv)
    if args.plan:
        plan(args)
        return

    import torch
    import transformers

    preset_name = "tiny" if args.tiny else args.preset
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if preset_name == "paper" and not device.startswith("cuda"):
        raise SystemExit("the paper preset builds 32B-72B models: it needs a CUDA device (try --tiny or --plan on a CPU)")
    budget = Budget(args.budget_minutes)
    llava_layers = args.llava_target_layers
    if preset_name == "paper" and llava_layers is None:
        llava_layers = auto_llava_layers(torch.cuda.mem_get_info(torch.device(device))[1])
    preset = build_preset(preset_name, llava_layers)
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    preset.methods = tuple(m for m in METHODS if m in args.methods.split(",") or m == "ar")
    if args.new_tokens:
        preset.new_tokens = args.new_tokens
    wanted = args.pairs.split(",")
    preset.pairs = [pair for pair in preset.pairs if pair.name in wanted]
    if not preset.pairs:
        raise SystemExit(f"--pairs {args.pairs!r} names no pair; choose from qwen, llava_ov")
    cuda = device.startswith("cuda")
    device_name = torch.cuda.get_device_name(torch.device(device)) if cuda else (platform.processor() or platform.machine())
    out = Path(args.out or f"reports/real_size_{device_name.split()[-1].lower() if cuda else 'cpu'}.md")
    log(budget, f"preset {preset.name} on {device} ({device_name}), pairs {[q.name for q in preset.pairs]}, "
                f"methods {list(preset.methods)}, budget {args.budget_minutes} min")
    video = write_video(Path(args.cache) / "real_size" / f"video_{preset.frames}x{preset.width}x{preset.height}.mp4",
                        preset.frames, preset.height, preset.width)
    data: dict[str, Any] = {
        "command": "python -m benchmarks.real_size " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"preset": preset.name, "dtype": preset.dtype, "k": preset.k, "new_tokens": preset.new_tokens,
                   "frames": preset.frames, "methods": list(preset.methods), "reps": preset.reps,
                   "budget_minutes": args.budget_minutes, "scripted_tau": preset.taus, "paper_tau": PAPER_TAU},
        "environment": {"device": device, "device_name": device_name, "torch": torch.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
        "pairs": [], "notes": [], "skipped": budget.skipped,
    }
    for pair in preset.pairs:
        if pair.target.layers < pair.target.full_layers:
            data["notes"].append(f"{pair.name}: the target is built with {pair.target.layers} of its {pair.target.full_layers} "
                                 f"decoder layers (the whole pair does not fit the device); its forwards are also timed at "
                                 f"{pair.fit_layers} layers and extrapolated linearly to {pair.target.full_layers}; 'full "
                                 "depth' columns rescale the engine runs with them")
        if data["pairs"] and not budget.allows(1.5 * data["pairs"][-1]["elapsed_s"], f"pair {pair.name}"):
            continue
        t0 = budget.elapsed()
        result = measure_pair(pair, preset, video, device, budget, cuda_memory=cuda)
        if not cuda:
            result["memory"] = cpu_memory(pair, preset, video, llava_layers, budget)
        result["elapsed_s"] = budget.elapsed() - t0
        derive(result, preset.k)
        data["pairs"].append(result)
    data["elapsed_s"] = budget.elapsed()
    write_report(data, out)
    for title, text in tables(data):
        print(f"\n{title}\n{text}")
    print(f"\nwrote {out} and {out.with_suffix('.json')}", flush=True)


if __name__ == "__main__":
    main()
