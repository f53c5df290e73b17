"""Cache scaling: does a decode step get slower as the context grows?

For prompts of 512, 2k and 8k tokens (plain text, so that the length is exact) on the tiny
Qwen2.5-VL model, times:
- `ar step`: one `Session.extend` of 1 token (a plain greedy step), median over steps;
- `sd verify`: one `Session.extend` of a K+1 block followed by the crop of a fully rejected
  round (K tokens dropped), median over rounds;
- `sd verify + probe`: the same with the relevance_repr=attention probe on the last layer, the
  prompt's tokens but the last 32 taken as the video;
- `sd round`: a whole `sd` round as the engine runs it: K one-token drafter steps (drafter: the
  tiny model of seed 1, on the same prompt), the verify block, and both crops of a rejected round;
- `...: cache updates`: the part of an `ar step` / `sd verify` spent inside the cache's `update`
  (all layers): the cache's own work, which is what must not grow with the context.
Times are the CPU time of the calling thread (`--clock cpu`, the default: at 1 torch thread every
operator runs on it, and other jobs on a shared machine do not count) or wall time (`--clock wall`).
Contexts, and caches when several are compared, are measured in turns (repeat r of every one
before repeat r+1), so that a change of machine load hits all of them. The slope is a least-squares line through the medians against the
context length, in ms per 1k context tokens, and as a share of the time at the shortest context.
An attention step reads every cached key, so some growth is inherent; what the slope must not show
is a copy of the whole cache per forward.

    python -m benchmarks.cache_scaling [--contexts 512,2048,8192] [--steps 48] [--repeats 3] [--k 10] \
        [--threads 1] [--clock cpu|wall] [--attn sdpa|eager] [--cache dynamic,preallocated] [--ops]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from testbed.paths import default_cache_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TEXT = ("The quick brown fox jumps over the lazy dog while the camera pans slowly across a sunlit field of tall grass, "
        "and a red kite circles above the old stone bridge. ")


def text_prompt(tokenizer, n: int):
    """input_ids [1, n] of ordinary English text (no chat template, no visual tokens)."""
    import torch

    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    ids = (ids * (n // len(ids) + 1))[:n]
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, n, dtype=torch.long)}


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def instrument(cache, clock) -> list[float]:
    """Accumulate the time spent in every layer's `update` of `cache` (the cache's own work: writing
    the new keys and values, and for transformers' DynamicCache concatenating them to the old ones)."""
    spent = [0.0]
    for layer in cache.layers:
        def update(*a, _update=layer.update, **kw):
            t0 = clock()
            result = _update(*a, **kw)
            spent[0] += clock() - t0
            return result
        layer.update = update
    return spent


def measure(sessions, n: int, args, out: dict) -> None:
    """One turn of every setting at context n (appends ms to out[setting]); the sessions end as they began."""
    import torch

    clock = CLOCKS[args.clock]
    target, draft = sessions[n]
    spent = target.cache_update_s
    prompt_len = target.length
    toks = torch.randint(1000, 100000, (args.steps * (args.k + 1),), generator=torch.Generator().manual_seed(n))

    def timed(fn, *a) -> float:
        t0 = clock()
        fn(*a)
        return 1e3 * (clock() - t0)

    def updates(name, fn, *a) -> float:  # times fn; the cache's share goes to "<name>: cache updates"
        before = spent[0]
        ms = timed(fn, *a)
        out[f"{name}: cache updates"].append(1e3 * (spent[0] - before))
        return ms

    def verify(i):  # K+1 tokens in one forward, then the crop of a round that accepted nothing
        target.extend(toks[i * (args.k + 1):(i + 1) * (args.k + 1)])
        target.crop(target.length - args.k)

    def sd_round(i):  # K drafter steps (the first feeds the last round's correction), verify, both crops
        for j in range(args.k):
            draft.extend(toks[i * (args.k + 1) + j:i * (args.k + 1) + j + 1])
        draft.crop(draft.length - (args.k - 1))
        verify(i)

    for i in range(args.steps):
        out["ar step"].append(updates("ar step", target.extend, toks[i:i + 1]))
    target.crop(prompt_len)
    for name, fn in (("sd verify", verify), ("sd verify + probe", verify), ("sd round", sd_round)):
        target.video_probe = (-1, torch.arange(0, n - 32)) if name == "sd verify + probe" else None
        for i in range(args.steps):
            out[name].append(updates("sd verify", fn, i) if name == "sd verify" else timed(fn, i))
        target.video_probe = None
        target.crop(prompt_len)
        draft.crop(prompt_len)


def slope(contexts: list[int], ms: list[float]) -> float:
    """Least-squares slope of ms against context, in ms per 1k tokens."""
    import numpy as np

    return float(np.polyfit(np.array(contexts) / 1000, np.array(ms), 1)[0])


def op_profile(target, inputs: dict, contexts: list[int], args) -> None:
    """Self CPU time per forward of the costliest operators, ar step and sd verify, per context."""
    import torch
    from tabulate import tabulate
    from torch.profiler import profile

    table: dict[tuple[str, str], dict[int, float]] = {}
    for n in contexts:
        sess = target.start(inputs[n])[0]
        toks = torch.randint(1000, 100000, (args.steps * (args.k + 1),), generator=torch.Generator().manual_seed(n))
        for name, width, drop in (("ar step", 1, 0), ("sd verify", args.k + 1, args.k)):
            with profile() as prof:
                for i in range(args.steps):
                    sess.extend(toks[i * width:(i + 1) * width])
                    sess.crop(sess.length - drop)
            for event in prof.key_averages():
                table.setdefault((name, event.key), {})[n] = event.self_cpu_time_total / 1e3 / args.steps
    top = sorted(table, key=lambda key: -max(table[key].values()))[:16]
    print(f"\nSelf CPU time per forward (ms) of the costliest operators, cache={type(sess.cache).__name__}")
    print(tabulate([[name, op, *(f"{table[(name, op)].get(n, 0.0):.3f}" for n in contexts)] for name, op in top],
                   headers=["setting", "operator", *(f"{n} ctx" for n in contexts)], tablefmt="github"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", default="512,2048,8192")
    p.add_argument("--steps", type=int, default=48, help="timed forwards per setting, context and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", default="cpu", choices=sorted(CLOCKS), help="cpu: this thread's CPU time (1 thread only)")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--cache", default=None,
                   help="comma-separated adapter caches to compare in turns: dynamic (transformers' DynamicCache), "
                        "preallocated (default: the adapters' own default only)")
    p.add_argument("--ops", action="store_true", help="also profile the operators of each cache (torch.profiler)")
    p.add_argument("--cache-dir", default=str(default_cache_root()))
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu measures the calling thread only; with --threads > 1 use --clock wall")

    import torch
    from tabulate import tabulate

    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl

    torch.set_num_threads(args.threads)
    contexts = [int(c) for c in args.contexts.split(",")]
    root = Path(args.cache_dir)
    paths = [str(build_tiny_qwen2_5_vl(root / name, seed=seed)) for name, seed in (("bench_target", 0), ("bench_draft", 1))]
    target, draft = (QwenVLAdapter.load(p, dtype="float32", device_map="cpu", attn_implementation=args.attn)
                     for p in paths)
    kinds = args.cache.split(",") if args.cache else [None]
    if args.cache and not hasattr(target, "cache_kind"):
        raise SystemExit("--cache needs adapters with a choice of cache (HFAdapter.cache_kind)")

    def use(kind):
        if kind is not None:
            target.cache_kind = draft.cache_kind = kind

    inputs = {n: text_prompt(target.tokenizer, n) for n in contexts}
    sessions = {}
    for kind in kinds:
        use(kind)
        sessions[kind] = {n: (target.start(inputs[n])[0], draft.start(inputs[n])[0]) for n in contexts}
        for t_sess, _ in sessions[kind].values():
            t_sess.cache_update_s = instrument(t_sess.cache, CLOCKS[args.clock])
    settings = ["ar step", "ar step: cache updates", "sd verify", "sd verify: cache updates", "sd verify + probe",
                "sd round"]
    results = {kind: {n: {s: [] for s in settings} for n in contexts} for kind in kinds}
    for _ in range(args.repeats):
        for n in contexts:
            for kind in kinds:
                measure(sessions[kind], n, args, results[kind][n])

    for kind in kinds:
        rows = []
        for s in settings:
            medians = [statistics.median(results[kind][n][s]) for n in contexts]
            b = slope(contexts, medians)
            rows.append([s, *(f"{m:.2f}" for m in medians), f"{b:+.3f}", f"{100 * b / medians[0]:+.1f}%"])
        cache = type(sessions[kind][contexts[0]][0].cache).__name__
        print(f"\nCache scaling: tiny Qwen2.5-VL (hidden 64, 2 layers), float32, CPU, torch threads={torch.get_num_threads()}, "
              f"attn={args.attn}, cache={cache}, K={args.k}; {args.clock} time, medians over {args.repeats} x {args.steps} "
              "forwards (rounds)")
        print(tabulate(rows, headers=["setting (ms)", *(f"{n} ctx" for n in contexts), "slope ms/1k ctx",
                                      "slope / shortest"], tablefmt="github", disable_numparse=True))
    if args.ops:
        for kind in kinds:
            use(kind)
            op_profile(target, inputs, contexts, args)


if __name__ == "__main__":
    main()
