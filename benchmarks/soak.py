"""Soak: decode many consecutive samples in one process and watch resident memory.

The lvspec_qwen backend is driven the way lmms-eval drives it (`generate_until` on lmms-eval
`Instance`s, one per doc, records appended to a stats file), in chunks, with the tiny random
Qwen2.5-VL models. Prints RSS after loading, after a warm-up chunk, after every chunk and at
the end; a leak shows as steady growth from chunk to chunk.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.soak [--samples 500] [--chunk 50] [--method lvspec]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=50, help="requests per generate_until call (RSS printed after each)")
    ap.add_argument("--method", default="lvspec")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--clips", type=int, default=5, help="distinct clips the docs cycle through")
    args = ap.parse_args()

    from lmms_eval.api.instance import Instance

    from lvspec_eval.lmms.qwen import LVSpecQwen
    from lvspec_eval.metrics.records import read_records
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl
    from testbed.fixtures.video import make_clip
    from testbed.paths import VIDEO_ARGS, default_cache_root

    cache = default_cache_root()
    target = build_tiny_qwen2_5_vl(cache / "bench_target", seed=0)
    draft = build_tiny_qwen2_5_vl(cache / "bench_draft", seed=1)
    clips = [str(make_clip(cache / "bench_clips" / f"clip_{i}.mp4", seed=100 + i)) for i in range(args.clips)]
    work = Path(tempfile.mkdtemp(prefix="lvspec_soak_"))
    stats = work / "records.jsonl"

    rss_start = rss_mib()
    backend = LVSpecQwen(pretrained=str(target), draft_pretrained=str(draft), method=args.method, dtype="float32",
                         device_map="cpu", **VIDEO_ARGS,
                         num_draft_tokens=4, stats_path=str(stats))
    task, split = "soak", "test"
    docs = [{"video": clips[i % len(clips)], "question": "Describe the video."} for i in range(args.samples)]
    backend.task_dict = {task: {split: docs}}

    def messages(doc):
        return [{"role": "user", "content": [{"type": "video", "url": doc["video"]},
                                             {"type": "text", "text": doc["question"]}]}]

    gen_kwargs = {"max_new_tokens": args.new_tokens, "temperature": 0, "until": ["<|lvspec_never|>"]}
    requests = [Instance("generate_until", ("", messages, gen_kwargs, i, task, split), idx=0,
                         metadata={"task": task, "doc_id": i, "repeats": 1}) for i in range(args.samples)]
    print(f"{args.samples} samples, method={args.method}, {args.new_tokens} new tokens, records -> {stats}")
    print(f"RSS before loading: {rss_start:.1f} MiB; after loading: {rss_mib():.1f} MiB")
    t0, marks = time.perf_counter(), []
    for start in range(0, args.samples, args.chunk):
        backend.generate_until(requests[start:start + args.chunk])
        gc.collect()
        marks.append((start + len(requests[start:start + args.chunk]), rss_mib()))
        print(f"  after {marks[-1][0]:4d} samples: RSS {marks[-1][1]:.1f} MiB ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    records = read_records(stats)
    failed = sum(1 for r in records if r.get("error"))
    warm = marks[0][1]
    print(f"records: {len(records)} ({failed} failed); wall {time.perf_counter() - t0:.0f} s")
    print(f"RSS at start (after the first chunk): {warm:.1f} MiB; at end: {marks[-1][1]:.1f} MiB; "
          f"growth {marks[-1][1] - warm:+.1f} MiB; max over chunks {max(m for _, m in marks):.1f} MiB")


if __name__ == "__main__":
    main()
