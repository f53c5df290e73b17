"""Forward costs of the trained testbed pair: cost ratio c = drafter step / target step, and the cost of
every block size the decode loop feeds (the speed model's inputs, docs/speed.md).

Both models at their full vocabulary (151,936 rows; the LLaVA-OneVision drafter 152,064), loaded by path
through the backend's adapter, float32 on this CPU. For each test clip of the caption task: prefill, then
at that context `benchmarks.measure.forward_costs` times blocks of every size in turns (median of
`--reps`, the cache cropped back after each): the target's blocks of 1..K+1 tokens (verify blocks; 1 is
the `ar` step), the drafter's steps of 1..3 tokens computing the last position's logits only (a drafter
round's first step also feeds the tokens it has not seen); the models alternate clip by clip, so both see
the same machine load. Prints medians over clips in ms and c.

    OMP_NUM_THREADS=1 python -m benchmarks.testbed_cost [--family qwen|llava_ov|qwen3_vl] [--clips 5] [--reps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DRAFT_FEEDS = (1, 2, 3)  # tokens a drafter step feeds: 1, or 2-3 in a round's first step


def pair_costs(target: Any, draft: Any, inputs: list[dict[str, Any]], k: int, reps: int) -> dict[str, Any]:
    """Medians over `inputs` (one prompt each) of the forward costs the decode loop pays, in seconds:
    target {prefill_s, block_s {1..k+1}}, drafter {prefill_s, block_s {1..3}, last position only}, c."""
    from benchmarks.measure import forward_costs

    runs: dict[str, list[dict[str, Any]]] = {"target": [], "drafter": []}
    for inp in inputs:  # alternate the models clip by clip
        runs["target"].append(forward_costs(target, inp, k, reps, sizes=range(1, k + 2)))
        runs["drafter"].append(forward_costs(draft, inp, k, reps, sizes=DRAFT_FEEDS, last_only=True))
    out: dict[str, Any] = {}
    for role, costs in runs.items():
        sizes = sorted(set().union(*(c["block_s"] for c in costs)))
        out[role] = {"prefill_s": statistics.median(c["prefill_s"] for c in costs),
                     "block_s": {n: statistics.median(c["block_s"][n] for c in costs) for n in sizes},
                     "context_tokens": statistics.median(c["context_tokens"] for c in costs)}
    out["c"] = out["drafter"]["block_s"][1] / out["target"]["block_s"][1]
    return out


def main() -> None:
    import torch
    from tabulate import tabulate

    import importlib

    from benchmarks.measure import testbed_docs
    from lvspec_eval.lmms import BACKENDS
    from testbed.checkpoints import checkpoint
    from testbed.families import PAIRS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--reps", type=int, default=5, help="timings per block size and clip (median)")
    p.add_argument("--k", type=int, default=10, help="largest verify block: K+1 tokens")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--family", choices=sorted(PAIRS), default="qwen", help="which trained testbed pair")
    a = p.parse_args()
    pair = PAIRS[a.family]
    module, _, backend = BACKENDS[pair.model].rpartition(".")
    adapter_class = getattr(importlib.import_module(module), backend).adapter_class  # the pair's backend's adapter
    torch.set_num_threads(a.threads)
    video = dict(max_num_frames=8, min_pixels=3136, max_pixels=12544)
    target, draft = (adapter_class.load(str(checkpoint(name)), dtype="float32", device_map="cpu", **video)
                     for name in (pair.target, pair.drafter))
    inputs = [inp for _, inp in testbed_docs(target, "caption", a.clips)]
    costs = pair_costs(target, draft, inputs, a.k, a.reps)
    t, d = costs["target"], costs["drafter"]
    rows = [[n, f"{1e3 * t['block_s'][n]:.2f}", f"{t['block_s'][n] / t['block_s'][1]:.2f}",
             f"{1e3 * d['block_s'][n]:.2f}" if n in d["block_s"] else ""] for n in t["block_s"]]
    print(tabulate(rows, headers=["tokens fed", "target ms", "target / step", "drafter ms (last position)"],
                   tablefmt="github"))
    params = {role: sum(x.numel() for x in m.model.parameters()) / 1e6 for role, m in (("target", target), ("drafter", draft))}
    print(f"\nprefill: target {1e3 * t['prefill_s']:.1f} ms, drafter {1e3 * d['prefill_s']:.1f} ms "
          f"({t['context_tokens']:g} prompt tokens); params: target {params['target']:.1f}M, drafter {params['drafter']:.1f}M")
    print(f"c = drafter step / target step = {costs['c']:.3f}  ({pair.described}; {a.clips} clips x {a.reps} reps, "
          f"{a.threads} threads, float32)")


if __name__ == "__main__":
    main()
