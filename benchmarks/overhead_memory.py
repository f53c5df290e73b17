"""Engine overhead and peak memory of every method, as the backend builds and runs it.

1. Overhead: per method, the share of decode wall time spent OUTSIDE the model forwards (drafter and
   target forwards are "inside"; the rest is the engine: argmax, the rule, the anchor finder, the
   relevance probes (their attention computation runs in a hook during the verify forward and is
   timed apart and counted as overhead), stop checks, bookkeeping, cache crops), median and max over
   samples. Every method is built by `build_method` from the default model args (only `method` set;
   `lvspec` also as this project's earlier default: the attention relevance probe, unpruned drafter), so
   each runs its default path (draft schedule, pruning, probes); all decode in this process, in turns per
   sample.
2. Memory: each method in a fresh process (`ar` loads no drafter): peak resident set (CPU; CUDA: peak
   allocated) while decoding the samples, split into target weights, drafter weights, target KV
   cache, drafter KV cache (bytes of every tensor each session's cache holds when the engine closes
   it, pre-allocated room included: `benchmarks.measure.CacheMeter`) and other (the rest: the Python
   runtime and libraries, inputs, activations, logits, allocator slack).

Models (default): the trained testbed pair on the testbed caption task (real answers, real acceptance,
the task's max_new_tokens and EOS), float32 on the CPU. `--tiny`: tiny random Qwen2.5-VL models
(testbed/fixtures, built on first use) on generated clips, `--new-tokens` tokens without EOS (near-zero
acceptance: every round is short, so the engine's share per forward is at its largest).

    OMP_NUM_THREADS=1 python -m benchmarks.overhead_memory [--samples 12] [--out reports/overhead.md]
    OMP_NUM_THREADS=1 python -m benchmarks.overhead_memory --tiny [--samples 6] [--new-tokens 64]
    python -m benchmarks.overhead_memory --target PATH --draft PATH --dtype bfloat16 --device cuda:0   # real models
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks.measure import SETTINGS as SPECULATIVE, label, machine, publish  # noqa: E402

#: (method, extra model args) of every run: `ar` and the speculative settings (benchmarks.measure.SETTINGS)
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (("ar", {}), *SPECULATIVE)
MEMORY_PARTS = ("target_weights", "draft_weights", "target_kv", "draft_kv", "other")


def tiny_models(cache: Path) -> tuple[str, str]:
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl

    return (str(build_tiny_qwen2_5_vl(cache / "bench_target", seed=0)),
            str(build_tiny_qwen2_5_vl(cache / "bench_draft", seed=1)))


def setup(args: argparse.Namespace, method: str = "lvspec") -> tuple[Any, Any, Any, list[dict], Any]:
    """(base model args, target, drafter (None for `ar`: not loaded), model inputs of the samples,
    DecodeConfig factory), loaded as the backend loads them (`benchmarks.measure.testbed_pair`)."""
    from benchmarks.measure import task_config, testbed_docs, testbed_pair
    from lvspec_eval.config import DecodeConfig

    if args.tiny:
        args.target, args.draft = tiny_models(Path(args.cache))
    base, target, draft = testbed_pair(args.target, args.draft, method=method, dtype=args.dtype, device=args.device)
    if not args.target:  # the testbed pair on its caption task
        samples = [inputs for _, inputs in testbed_docs(target, "caption", args.samples)]
        new_tokens, eos = int(task_config("caption")["max_new_tokens"]), (target.tokenizer.eos_token_id,)
    else:
        from testbed.fixtures.video import make_clip

        samples = []
        for i in range(args.samples):
            clip = str(make_clip(Path(args.cache) / "bench_clips" / f"clip_{i}.mp4", seed=100 + i))
            samples.append(target.prepare([{"role": "user", "content": [
                {"type": "video", "video": clip, **target.video_kwargs([clip])},
                {"type": "text", "text": "Describe the video."}]}]))
        new_tokens, eos = args.new_tokens, ()  # random weights: no EOS stop

    def config(method: Any) -> Any:
        return DecodeConfig(max_new_tokens=new_tokens, eos_ids=eos, num_draft_tokens=method.args.num_draft_tokens)

    return base, target, draft, samples, config


def build(base: Any, method: str, extra: dict[str, Any], k: int | None) -> Any:
    """The method as users run it: `build_method` over the default args with `method` (and K if given)."""
    from lvspec_eval.engine import build_method

    return build_method(base.replace(method=method, **extra, **({"num_draft_tokens": k} if k else {})))


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    from lvspec_eval.metrics.aggregate import tau_mean
    from lvspec_eval.metrics.records import decode_fields

    base, target, draft, samples, config = setup(args)
    methods = [build(base, m, extra, args.k) for m, extra in SETTINGS]
    methods[1].decode(target, draft, samples[0], config(methods[1]), seed=0)  # warm-up, not recorded
    runs: list[list[Any]] = [[] for _ in methods]
    for i, inp in enumerate(samples):
        order = list(range(len(methods)))
        for j in order[i % len(order):] + order[:i % len(order)]:
            runs[j].append(methods[j].decode(target, draft, inp, config(methods[j]), seed=i, profile=True))
    rows = []
    for (name, extra), method, results in zip(SETTINGS, methods, runs):
        share = [(r.decode_s - r.draft_forward_s - r.target_forward_s) / r.decode_s for r in results]
        probes = [r.probe_s / r.decode_s for r in results]
        rows.append({"setting": label(name, extra), "params": method.args.rule_params(),
                     "tau_mean": tau_mean([decode_fields(r, method.args.num_draft_tokens if method.drafts else 0)
                                           for r in results]),
                     "ms_per_round": 1e3 * statistics.median(r.decode_s / r.rounds for r in results if r.rounds),
                     "overhead_ms_per_round": 1e3 * statistics.median(
                         (r.decode_s - r.draft_forward_s - r.target_forward_s) / r.rounds for r in results if r.rounds),
                     "overhead_median": statistics.median(share), "overhead_max": max(share),
                     "probe_median": statistics.median(probes)})
    return {"samples": len(samples), "new_tokens_max": config(methods[0]).max_new_tokens, "rows": rows,
            "device": str(target.input_device)}


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: baseline, load what `args.method` needs, decode the samples under a 1 ms peak
    sampler; prints one JSON line."""
    import gc

    import torch

    from benchmarks.measure import CacheMeter, PeakSampler, memory_breakdown

    cuda = torch.cuda.is_available() and args.device != "cpu"
    sampler = PeakSampler(cuda)
    baseline = sampler.now()
    name, extra = SETTINGS[args.setting]
    base, target, draft, samples, config = setup(args, method=name)
    method = build(base, name, extra, args.k)
    gc.collect()
    loaded = sampler.now()
    t_meter, d_meter = CacheMeter(target), (CacheMeter(draft) if draft is not None else None)
    with PeakSampler(cuda) as peak:
        for i, inp in enumerate(samples):
            method.decode(t_meter, d_meter, inp, config(method), seed=i)
    n = len(samples)
    mem = memory_breakdown(int(peak.peak * 2**20), target, draft, t_meter.bytes // n, d_meter.bytes // n if d_meter else 0,
                           baseline=int(baseline * 2**20), loaded=int(loaded * 2**20),
                           unit="allocated" if cuda else "resident set")
    print(json.dumps({"setting": label(name, extra), **mem}))


def memory(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for i, (name, extra) in enumerate(SETTINGS):
        cmd = [sys.executable, "-m", "benchmarks.overhead_memory", "--memory-child", "--setting", str(i),
               "--dtype", args.dtype, "--device", args.device, "--samples", str(args.memory_samples),
               "--new-tokens", str(args.new_tokens), "--cache", args.cache]
        cmd += (["--tiny"] if args.tiny else []) + (["--k", str(args.k)] if args.k else [])
        cmd += ["--target", args.target, "--draft", args.draft] if args.target and not args.tiny else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            raise RuntimeError(f"memory process of {label(name, extra)} failed:\n{proc.stderr[-3000:]}")
        out[label(name, extra)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def markdown(data: dict[str, Any]) -> str:
    from tabulate import tabulate

    mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    o = data["overhead"]
    lines = [f"Command: `{data['command']}`", "", f"{data['models']}; {data['machine']}; torch threads "
             f"{data['threads']}; {data['minutes']:.1f} min.", "",
             f"### Engine overhead (decode time outside model forwards; {o['samples']} samples, up to "
             f"{o['new_tokens_max']} new tokens, {o['device']})", ""]
    rows = [[r["setting"], f"{r['tau_mean']:.2f}" if r["tau_mean"] is not None else "-", f"{r['ms_per_round']:.2f}",
             f"{r['overhead_ms_per_round']:.2f}", f"{100 * r['overhead_median']:.1f}%", f"{100 * r['overhead_max']:.1f}%",
             f"{100 * r['probe_median']:.2f}%"] for r in o["rows"]]
    lines += [tabulate(rows, headers=["method", "tau_mean", "ms / round (median)", "engine ms / round (median)",
                                      "overhead (median)", "overhead (max)", "of which probes (median)"],
                       tablefmt="github"), ""]
    m = data["memory"]
    unit = next(iter(m.values()))["unit"] if m else "resident set"
    ar = m.get("ar")
    lines += [f"### Peak memory ({unit}, MiB; each method in a fresh process, sampled every 1 ms while decoding "
              f"{data['memory_samples']} samples; shares of the peak)", ""]
    rows = []
    for name, r in m.items():
        rows.append([name, mib(r["baseline"]), mib(r["loaded"]), mib(r["peak"]),
                     "-" if ar is None else f"{(r['peak'] - ar['peak']) / 2**20:+.1f}",
                     *[f"{mib(r[p])} ({100 * r[p] / r['peak']:.1f}%)" for p in MEMORY_PARTS]])
    lines += [tabulate(rows, headers=["method", "before load", "after load", "peak", "peak - ar", "target weights",
                                      "drafter weights", "target KV", "drafter KV", "other"], tablefmt="github")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random models on generated clips instead of the testbed pair")
    p.add_argument("--target", help="target checkpoint (with --draft: these models on generated clips)")
    p.add_argument("--draft")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=12, help="samples of the overhead table")
    p.add_argument("--memory-samples", type=int, default=4, help="samples each memory process decodes")
    p.add_argument("--new-tokens", type=int, default=64, help="--tiny / --target: tokens per sample (no EOS)")
    p.add_argument("--k", type=int, default=None, help="K (default: the model args' default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=str(Path(os.environ.get("LVSPEC_CACHE", Path.home() / ".cache" / "lvspec_eval"))))
    p.add_argument("--out", type=Path, default=None, help="markdown here, the data as JSON beside it")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    t0 = time.time()
    data = {"command": "python -m benchmarks.overhead_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
            "models": ("tiny random Qwen2.5-VL models (testbed/fixtures), generated clips" if args.tiny else
                       f"{args.target} / {args.draft}" if args.target else
                       "trained testbed pair (Qwen2.5-VL), testbed caption task"),
            "machine": machine(),
            "threads": torch.get_num_threads(), "memory_samples": args.memory_samples}
    data["overhead"] = overhead(args)
    data["memory"] = memory(args)
    data["minutes"] = (time.time() - t0) / 60
    publish(markdown(data), data, args.out)


if __name__ == "__main__":
    main()
