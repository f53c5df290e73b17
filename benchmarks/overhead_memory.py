"""Engine overhead and memory of speculative decoding against plain greedy decoding.

Prints two tables:
1. per method, the share of decode wall time spent OUTSIDE model forwards (drafting + verify
   forwards are "inside"; the rest is the engine: argmax, rule, bookkeeping, cache crops);
   medians over samples, all methods measured in one process, each built by `build_method` from the
   default model args (so `lvspec` is the path users run by default);
2. peak memory of `ar` and `sd`, each in a fresh process (CPU: peak RSS; CUDA: peak allocated),
   after loading the models and during decoding, with the KV-cache size computed from the config.

Usage (tiny random Qwen2.5-VL models, built on first use in the cache folder):
    .venv/bin/python -m benchmarks.overhead_memory [--samples 8] [--new-tokens 64] [--k 10]
    .venv/bin/python -m benchmarks.overhead_memory --target PATH --draft PATH --dtype bfloat16   # real models
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def tiny_models(cache: Path) -> tuple[str, str]:
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl

    return (str(build_tiny_qwen2_5_vl(cache / "bench_target", seed=0)),
            str(build_tiny_qwen2_5_vl(cache / "bench_draft", seed=1)))


def load(args):
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter

    video = dict(max_num_frames=8, min_pixels=56 * 56, max_pixels=112 * 112)
    target = QwenVLAdapter.load(args.target, dtype=args.dtype, device_map=args.device, **video)
    draft = None if args.method == "ar" else QwenVLAdapter.load(args.draft, dtype=args.dtype, device_map=args.device, **video)
    return target, draft


def inputs_for(target, n: int, cache: Path):
    from testbed.fixtures.video import make_clip

    out = []
    for i in range(n):
        clip = str(make_clip(cache / "bench_clips" / f"clip_{i}.mp4", seed=100 + i))
        msgs = [{"role": "user", "content": [{"type": "video", "video": clip, **target.video_kwargs([clip])},
                                             {"type": "text", "text": "Describe the video."}]}]
        out.append(target.prepare(msgs))
    return out


def method_for(name: str, k: int):
    """The method as users run it: built from the model args' defaults (`method=name`, K=k)."""
    from lvspec_eval.config import LVSpecArgs
    from lvspec_eval.engine import build_method

    return build_method(LVSpecArgs(method=name, num_draft_tokens=k))


def overhead(args) -> None:
    import torch

    from lvspec_eval.config import DecodeConfig
    from lvspec_eval.metrics.aggregate import tau_median
    from lvspec_eval.metrics.records import decode_fields

    args.method = "sd"
    target, draft = load(args)
    samples = inputs_for(target, args.samples, Path(args.cache))
    cfg = DecodeConfig(max_new_tokens=args.new_tokens, eos_ids=(), num_draft_tokens=args.k)
    rows = []
    method_for("ar", args.k).decode(target, None, samples[0], cfg, seed=0)  # warm-up
    for name in ("ar", "sd", "lvspec", "fly", "random"):
        method = method_for(name, args.k)
        shares, per_round, records = [], [], []
        for i, inp in enumerate(samples):
            r = method.decode(target, draft, inp, cfg, seed=i, profile=True)
            inside = r.draft_forward_s + r.target_forward_s
            shares.append((r.decode_s - inside) / r.decode_s)
            per_round.append(r.decode_s / r.rounds)
            records.append(decode_fields(r, 0 if name == "ar" else args.k))
        rows.append([name, f"{tau_median(records):.2f}", f"{1e3 * statistics.median(per_round):.2f}",
                     f"{100 * statistics.median(shares):.1f}%", f"{100 * max(shares):.1f}%"])
    from tabulate import tabulate

    print(f"Engine overhead (outside model forwards), {args.samples} samples x {args.new_tokens} tokens, K={args.k}, "
          f"{args.dtype} on {target.input_device}, torch threads={torch.get_num_threads()}")
    print(tabulate(rows, headers=["method", "tau_median", "ms/round (median)", "overhead (median)", "overhead (max)"],
                   tablefmt="github"))


class PeakSampler:
    """Samples this process's memory every millisecond in a thread (CPU: RSS; CUDA: allocated)."""

    def __init__(self, cuda: bool):
        import threading

        import psutil
        import torch

        self.cuda, self.torch, self.proc = cuda, torch, psutil.Process()
        self.peak, self._stop, self._thread = 0.0, threading.Event(), threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:  # MiB
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20
        return self.proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(0.001)

    def __enter__(self) -> "PeakSampler":
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.cuda:
            self.peak = max(self.peak, self.torch.cuda.max_memory_allocated() / 2**20)


def memory_child(args) -> None:
    """Runs in a fresh process: baseline, load, decode under a peak sampler; prints one JSON line."""
    import gc

    import torch

    from lvspec_eval.config import DecodeConfig

    cuda = torch.cuda.is_available() and args.device != "cpu"
    probe = PeakSampler(cuda)
    baseline = probe.now()
    target, draft = load(args)
    samples = inputs_for(target, args.samples, Path(args.cache))
    gc.collect()
    loaded = probe.now()
    cfg = DecodeConfig(max_new_tokens=args.new_tokens, eos_ids=(), num_draft_tokens=args.k)
    lengths = []
    method = method_for(args.method, args.k)
    with PeakSampler(cuda) as sampler:
        for i, inp in enumerate(samples):
            r = method.decode(target, draft, inp, cfg, seed=i)
            lengths.append(int(inp["input_ids"].shape[-1]) + len(r.tokens))
    gc.collect()
    after = probe.now()

    def kv_mib(model, seq):
        c = model.config.get_text_config()
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * seq * model.dtype.itemsize / 2**20

    def weights_mib(model):
        return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    print(json.dumps({
        "method": args.method, "baseline_mib": baseline, "loaded_mib": loaded, "peak_mib": sampler.peak,
        "after_mib": after, "load_growth_mib": loaded - baseline, "decode_growth_mib": sampler.peak - loaded,
        "target_weights_mib": weights_mib(target.model),
        "draft_weights_mib": weights_mib(draft.model) if draft else 0.0,
        "target_kv_mib": kv_mib(target.model, max(lengths)),
        "draft_kv_mib": kv_mib(draft.model, max(lengths)) if draft else 0.0,
    }))


def memory(args) -> None:
    from tabulate import tabulate

    results = {}
    for method in ("ar", "sd"):
        cmd = [sys.executable, "-m", "benchmarks.overhead_memory", "--memory-child", "--method", method, "--target", args.target, "--draft",
               args.draft, "--dtype", args.dtype, "--device", args.device, "--samples", str(args.samples),
               "--new-tokens", str(args.new_tokens), "--k", str(args.k), "--cache", args.cache]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    unit = "allocated" if "cuda" in args.device else "RSS"
    rows = [[m, f"{r['baseline_mib']:.1f}", f"{r['load_growth_mib']:.1f}", f"{r['peak_mib']:.1f}",
             f"{r['decode_growth_mib']:.1f}", f"{r['after_mib']:.1f}",
             f"{r['target_weights_mib'] + r['draft_weights_mib']:.1f}", f"{r['target_kv_mib'] + r['draft_kv_mib']:.2f}"]
            for m, r in results.items()]
    print(f"\nMemory ({unit}, MiB), each method in a fresh process, sampled every 1 ms while decoding")
    print(tabulate(rows, headers=["method", "before load", "load growth", "peak decoding", "peak - loaded",
                                  "after decoding", "weights", "KV cache (computed)"], tablefmt="github"))
    ar, sd = results["ar"], results["sd"]
    print(f"sd - ar: peak {sd['peak_mib'] - ar['peak_mib']:+.1f} MiB, load growth "
          f"{sd['load_growth_mib'] - ar['load_growth_mib']:+.1f} MiB, working memory while decoding "
          f"{sd['decode_growth_mib'] - ar['decode_growth_mib']:+.1f} MiB; expected: drafter weights "
          f"{sd['draft_weights_mib']:.1f} MiB + drafter KV cache {sd['draft_kv_mib']:.2f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target")
    p.add_argument("--draft")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--cache", default=str(Path(os.environ.get("LVSPEC_CACHE", Path.home() / ".cache" / "lvspec_eval"))))
    p.add_argument("--method", default="sd")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.target:
        args.target, args.draft = tiny_models(Path(args.cache))
    if args.memory_child:
        memory_child(args)
        return
    overhead(args)
    memory(args)


if __name__ == "__main__":
    main()
