"""Cache scaling: does a decode step get slower as the context grows?

For prompts of 512, 2k and 8k tokens (plain text, so that the length is exact) on the tiny
Qwen2.5-VL model, times:
- `ar step`: one `Session.extend` of 1 token (a plain greedy step), median over steps;
- `sd verify`: one `Session.extend` of a K+1 block followed by the crop of a fully rejected
  round (K tokens dropped), median over rounds;
- `sd verify + probe`: the same with the relevance_repr=attention probe on the last layer, the
  prompt's tokens but the last 32 taken as the video;
- `sd round (engine)`: a whole `sd` round through `decode` (K drafter steps + verify + crops,
  drafter = the tiny model of seed 1, which rejects almost everything), decode time / rounds,
  median over runs.
Contexts are measured in turns (repeat r of every context before repeat r+1), so that a change of
machine load hits all of them. The slope is a least-squares line through the medians against the
context length, in ms per 1k context tokens, and as a share of the time at the shortest context.
An attention step reads every cached key, so some growth is inherent; what the slope must not show
is a copy of the whole cache per forward.

    python -m benchmarks.cache_scaling [--contexts 512,2048,8192] [--steps 48] [--repeats 3] [--k 10] \
        [--threads 1] [--attn sdpa|eager] [--cache dynamic|preallocated]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

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


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(target, sessions, n: int, args, out: dict) -> None:
    """One turn of the three session-level settings at context n (appends ms to out[setting])."""
    import torch

    from lvspec_eval.adapters.base import Session

    sess: Session = sessions[n]
    prompt_len = sess.length
    gen = torch.Generator().manual_seed(n)
    toks = torch.randint(1000, 100000, (args.steps * (args.k + 1),), generator=gen)
    # ar: one token per forward
    for i in range(args.steps):
        out["ar step"].append(1e3 * timed(sess.extend, toks[i:i + 1]))
    sess.crop(prompt_len)
    # sd verify: K+1 tokens per forward, then drop K of them (a round that accepted nothing)
    for probe in (False, True):
        sess.video_probe = (-1, torch.arange(0, n - 32)) if probe else None
        name = "sd verify + probe" if probe else "sd verify"

        def verify(i):
            sess.extend(toks[i * (args.k + 1):(i + 1) * (args.k + 1)])
            sess.crop(sess.length - args.k)
        for i in range(args.steps):
            out[name].append(1e3 * timed(verify, i))
        sess.video_probe = None
        sess.crop(prompt_len)


def engine_round(target, draft, inputs, args) -> float:
    """ms per round of one `sd` decode through the engine."""
    from lvspec_eval.acceptance import StrictRule
    from lvspec_eval.config import DecodeConfig
    from lvspec_eval.engine import decode

    cfg = DecodeConfig(max_new_tokens=args.engine_tokens, eos_ids=(), num_draft_tokens=args.k)
    r = decode(target, inputs, cfg, draft=draft, rule=StrictRule())
    return 1e3 * r.decode_s / r.rounds


def slope(contexts: list[int], ms: list[float]) -> float:
    """Least-squares slope of ms against context, in ms per 1k tokens."""
    import numpy as np

    return float(np.polyfit(np.array(contexts) / 1000, np.array(ms), 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", default="512,2048,8192")
    p.add_argument("--steps", type=int, default=48, help="timed forwards per setting, context and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--engine-tokens", type=int, default=48, help="max_new_tokens of each engine sd run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--cache", default=None, choices=["dynamic", "preallocated"],
                   help="the adapters' KV cache (default: the adapters' own default)")
    p.add_argument("--cache-dir", default=str(Path(os.environ.get("LVSPEC_CACHE", Path.home() / ".cache" / "lvspec_eval"))))
    args = p.parse_args()

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
    if args.cache is not None:
        for adapter in (target, draft):
            if not hasattr(adapter, "cache_kind"):
                raise SystemExit("--cache needs adapters with a choice of cache (HFAdapter.cache_kind)")
            adapter.cache_kind = args.cache
    inputs = {n: text_prompt(target.tokenizer, n) for n in contexts}
    sessions = {n: target.start(inputs[n])[0] for n in contexts}
    settings = ["ar step", "sd verify", "sd verify + probe", "sd round (engine)"]
    results = {n: {s: [] for s in settings} for n in contexts}
    engine_round(target, draft, inputs[contexts[0]], args)  # warm-up
    for _ in range(args.repeats):
        for n in contexts:
            measure(target, sessions, n, args, results[n])
            results[n]["sd round (engine)"].append(engine_round(target, draft, inputs[n], args))

    rows = []
    for s in settings:
        medians = [statistics.median(results[n][s]) for n in contexts]
        b = slope(contexts, medians)
        rows.append([s, *(f"{m:.2f}" for m in medians), f"{b:+.3f}", f"{100 * b / medians[0]:+.1f}%"])
    cache = type(sessions[contexts[0]].cache).__name__
    print(f"Cache scaling: tiny Qwen2.5-VL (hidden 64, 2 layers), float32, CPU, torch threads={torch.get_num_threads()}, "
          f"attn={args.attn}, cache={cache}, K={args.k}; medians over {args.repeats} x {args.steps} forwards "
          f"(engine: {args.repeats} runs of {args.engine_tokens} tokens)")
    print(tabulate(rows, headers=["setting (ms)", *(f"{n} ctx" for n in contexts), "slope ms/1k ctx", "slope / shortest"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
