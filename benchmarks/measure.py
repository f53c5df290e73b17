"""Measurement primitives shared by the benchmarks (one home): forward costs, memory accounting, and the
speed model's formulas.

- `timed`, `forward_costs`: device-synchronised prefill / step / block times of a model at a context
  (benchmarks/real_size.py, benchmarks/testbed_cost.py, benchmarks/speed_model.py).
- `tensor_bytes`, `weight_bytes`, `CacheMeter`, `memory_breakdown`, `PeakSampler`, `in_fresh_process`: what a
  decode holds in memory, split into weights and KV caches, each measured in a process of its own
  (benchmarks/real_size.py, benchmarks/overhead_memory.py).
- `round_costs`, `per_token_acceptance`, `leviathan`, `cost_model`, `predicted_decode_s`: the speed model
  (docs/speed.md).
- `SETTINGS`, `label`: the speculative settings the benchmarks compare.
- `testbed_pair`, `testbed_docs`, `task_config`: the trained testbed pair loaded as the `lvspec_qwen` backend
  loads it, and the testbed tasks' docs with their model inputs and decode settings (the benchmarks that
  decode the testbed: draft_schedule, speed_model, overhead_memory).

No work at import time; torch is imported inside the functions.
"""

from __future__ import annotations

import importlib
import statistics
import sys
from typing import Any, Callable, Iterable, Optional


#: (method, extra model args) of every speculative setting the benchmarks compare: each method at its defaults,
#: and lvspec also as this project's earlier default (the attention relevance probe, unpruned drafter)
SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sd", {}), ("specvlm", {}), ("lvspec", {}), ("lvspec", {"relevance_repr": "attention", "draft_video_keep": 1.0}),
    ("fly", {}), ("fly_plus", {}), ("random", {}),
)


def label(method: str, extra: dict[str, Any]) -> str:
    """A setting's name in tables: the method and its non-default model args."""
    return method + "".join(f" {k}={v}" for k, v in extra.items())


# -- the testbed ------------------------------------------------------------------------------------

def testbed_pair(target: Optional[str] = None, draft: Optional[str] = None, method: str = "lvspec",
                 dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any, Any]:
    """(base model args, target adapter, drafter adapter or None) of the trained testbed pair (or the given
    Qwen2.5-VL checkpoints) at the testbed's video settings, checked and loaded as the `lvspec_qwen`
    backend does (`lvspec_eval.lmms.pair`); `method=ar` loads no drafter."""
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter
    from lvspec_eval.config import LVSpecArgs
    from lvspec_eval.lmms import pair
    from testbed.checkpoints import checkpoint
    from testbed.paths import VIDEO_ARGS

    args = LVSpecArgs(pretrained=target or str(checkpoint("target")), draft_pretrained=draft or str(checkpoint("drafter")),
                      method=method, dtype=dtype, device_map=device, **VIDEO_ARGS)
    pair.check_checkpoints(args)
    maps = pair.device_maps(args, device=device)
    pair.check_tokenizers(args)
    return (args, *pair.load_pair(args, QwenVLAdapter, *maps, dtype=args.dtype))


def task_config(task: str) -> dict[str, Any]:
    """The generation kwargs of testbed task `task` ("caption" or "mcq") from its lmms-eval YAML."""
    import yaml

    from testbed.paths import TESTBED_TASK_DIR

    class Loader(yaml.SafeLoader):  # the task YAMLs carry `!function` tags (lmms-eval resolves them)
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    text = (TESTBED_TASK_DIR / f"lvspec_testbed_{task}.yaml").read_text()
    return yaml.load(text, Loader=Loader)["generation_kwargs"]


def testbed_docs(target: Any, task: str, limit: int) -> list[tuple[dict, dict]]:
    """The first `limit` docs of testbed task `task` ("caption" or "mcq") with the target's model inputs,
    prepared from lmms-eval chat messages as the backend prepares them."""
    from testbed.runs import task_docs

    return task_docs(target, f"{task}.jsonl", limit)


# -- time -------------------------------------------------------------------------------------------

def timed(device: Any, fn: Callable[[], Any]) -> tuple[Any, float]:
    from lvspec_eval.metrics.timing import Stopwatch

    watch = Stopwatch(device)
    watch.start()
    out = fn()
    return out, watch.stop()


def forward_costs(adapter: Any, inputs: dict[str, Any], k: int, reps: int, sizes: Iterable[int] = (),
                  last_only: bool = False) -> dict[str, Any]:
    """Prefill on `inputs`, then at that context the median time of a one-token step (`step_s`), of a
    (k+1)-token verify block (`verify_s`) and of a block of each size in `sizes` (`block_s`: {size: s}),
    the sizes taken in turns within each repetition and the cache cropped back after each; the KV bytes
    after prefill. `last_only`: blocks compute the output layer at their last position only, as a
    drafter step does (`Session.extend(last_only=True)`)."""
    import torch

    device = adapter.input_device
    (session, _), prefill_s = timed(device, lambda: adapter.start(inputs))
    length = session.length
    kv = tensor_bytes(session.cache)
    every = sorted({1, k + 1, *sizes})
    times: dict[int, list[float]] = {n: [] for n in every}
    for _ in range(reps):
        for n in every:
            ids = torch.full((n,), 1000, dtype=torch.long)
            _, s = timed(device, lambda ids=ids: session.extend(ids, last_only=last_only))
            session.crop(length)
            times[n].append(s)
    session.close()
    block = {n: statistics.median(t) for n, t in times.items()}
    return {"prefill_s": prefill_s, "step_s": block[1], "verify_s": block[k + 1], "block_s": block,
            "context_tokens": length, "kv_bytes_prefill": kv}



def round_costs(target: Any, draft: Any, inputs: dict[str, Any], k: int, reps: int, feeds: Iterable[int] = (1, 2, 3)
                ) -> dict[str, Any]:
    """The forward costs of a decode, each timed in the pattern the decode loop runs it in (a forward is
    slower after the other model's forward evicted its weights and cache from the CPU caches):

    - `ar` pattern: the target alone, one-token steps back to back -> `ar_step_s`;
    - speculative rounds: K drafter forwards (the first feeding p tokens, p cycling over `feeds`; the others
      one token; last position's logits only) then one target block of m tokens, m cycling over 1..K+1 ->
      `draft_first_s` {p: s}, `draft_step_s`, `target_block_s` {m: s}.

    Both prefilled on `inputs`; each cache is cropped back after every forward (a fixed context), and each
    forward's logits go through the engine's argmax, untimed, as in the loop (its memory traffic is part of
    the pattern). Medians over `reps` cycles (each cycle: K+1 rounds and 10 `ar` steps)."""
    import torch

    from lvspec_eval.engine.loop import greedy

    device = target.input_device
    t_sess, _ = target.start(inputs)
    d_sess, _ = draft.start(inputs)
    t_len, d_len = t_sess.length, d_sess.length
    feeds = list(feeds)
    ar: list[float] = []
    first: dict[int, list[float]] = {p: [] for p in feeds}
    step: list[float] = []
    block: dict[int, list[float]] = {m: [] for m in range(1, k + 2)}
    one = torch.tensor([1000])
    for rep in range(reps):
        for _ in range(10):
            logits, s = timed(device, lambda: t_sess.extend(one))
            greedy(logits)
            t_sess.crop(t_len)
            ar.append(s)
        for m in range(1, k + 2):
            p = feeds[(rep + m) % len(feeds)]
            ids = torch.full((p,), 1000, dtype=torch.long)
            logits, s = timed(device, lambda ids=ids: d_sess.extend(ids, last_only=True))
            greedy(logits)
            first[p].append(s)
            for _ in range(k - 1):
                logits, s = timed(device, lambda: d_sess.extend(one, last_only=True))
                greedy(logits)
                step.append(s)
            d_sess.crop(d_len)
            ids = torch.full((m,), 1000, dtype=torch.long)
            logits, s = timed(device, lambda ids=ids: t_sess.extend(ids))
            greedy(logits)
            t_sess.crop(t_len)
            block[m].append(s)
    t_sess.close()
    d_sess.close()
    med = statistics.median
    return {"ar_step_s": med(ar), "draft_first_s": {p: med(v) for p, v in first.items()}, "draft_step_s": med(step),
            "target_block_s": {m: med(v) for m, v in block.items()}, "context_tokens": t_len}

# -- memory -----------------------------------------------------------------------------------------

def tensor_bytes(obj: Any, _seen: Optional[set] = None, _depth: int = 0) -> int:
    """Bytes of every distinct tensor storage reachable from `obj` (lists, tuples, dicts, object
    attributes; 6 levels deep): a KV cache of any class, pre-allocated capacity included."""
    import torch

    seen = set() if _seen is None else _seen
    if obj is None or _depth > 6 or isinstance(obj, (str, bytes, int, float, bool, torch.nn.Module)):
        return 0
    if torch.is_tensor(obj):
        storage = obj.untyped_storage()
        key = (storage.data_ptr(), obj.device.type)
        if key in seen or obj.device.type == "meta":
            return 0
        seen.add(key)
        return int(storage.nbytes())
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        items = obj
    elif hasattr(obj, "__dict__"):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        items = vars(obj).values()
    else:
        return 0
    return sum(tensor_bytes(x, seen, _depth + 1) for x in items)


def weight_bytes(adapter: Optional[Any]) -> int:
    if adapter is None:
        return 0
    return tensor_bytes(list(adapter.model.parameters()) + list(adapter.model.buffers()))


class CacheMeter:
    """An adapter as the engine sees it, which records the bytes of each session's KV cache when the
    engine closes the session (its largest size: decode() closes sessions at the end)."""

    def __init__(self, adapter: Any):
        self.adapter = adapter
        self.bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.adapter, name)

    def start(self, *args: Any, **kwargs: Any) -> Any:
        session, prefill = self.adapter.start(*args, **kwargs)
        close = session.close

        def metered_close() -> None:
            self.bytes += tensor_bytes(session.cache)
            close()

        session.close = metered_close
        return session, prefill


def memory_breakdown(peak: int, target: Any, draft: Any, kv_target: int, kv_draft: int, **extra: Any) -> dict[str, Any]:
    parts = {"target_weights": weight_bytes(target), "draft_weights": weight_bytes(draft),
             "target_kv": kv_target, "draft_kv": kv_draft}
    parts["other"] = peak - sum(parts.values())
    return {"peak": peak, **parts, **extra}


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


def _call(module: str, name: str, args: tuple) -> Any:
    return getattr(importlib.import_module(module), name)(*args)


def in_fresh_process(fn: Callable[..., Any], *args: Any, preload: Iterable[str] = ("torch", "transformers")) -> Any:
    """`fn(*args)` in a process of its own, which has imported modules and done nothing else: nothing built,
    nothing allocated before `fn` starts, as in a fresh interpreter (a memory measurement's baseline).
    The process is forked from multiprocessing's fork server, a fresh interpreter that imported `preload`
    and `fn`'s module once (the imports are not paid per call). Its resident set counts only the library
    pages it touches, so a CPU peak is lower than a fresh interpreter's (about 290 MiB on real_size's tiny
    preset): compare methods measured the same way. Returns `fn`'s result (picklable);
    `fn`'s exception is raised here, with the child's traceback as its cause."""
    import multiprocessing

    module = fn.__module__
    if module == "__main__":  # `python -m benchmarks.x`: the same module under its own name
        module = sys.modules["__main__"].__spec__.name
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*preload, module])  # effective when the server starts (the first call)
    with ctx.Pool(1) as pool:
        return pool.apply(_call, (module, fn.__name__, args))


# -- the speed model (docs/speed.md) -------------------------------------------------------------------

def per_token_acceptance(tau: float, k: int) -> float:
    """a with (1 - a^(K+1)) / (1 - a) = tau + 1: the per-token acceptance that gives tau_excl (Leviathan)."""
    if tau >= k:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(mid**i for i in range(k + 1)) < tau + 1:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def leviathan(a: float, k: int, c: float) -> float:
    """Expected speedup (1 - a^(K+1)) / ((1 - a)(K c + 1)) (method.md section 6)."""
    tokens = k + 1 if a >= 1.0 else (1 - a ** (k + 1)) / (1 - a)
    return tokens / (k * c + 1)


def cost_model(tau: float, k: int, t_step: float, t_draft: float, t_verify: float) -> float:
    """Decode speedup of rounds that all draft K tokens and emit tau + 1 each: (tau + 1) t_step / (K t_draft + t_verify),
    t_verify the target's (K+1)-token block (Leviathan's formula takes t_verify = t_step and t_draft = c t_step)."""
    return (tau + 1) * t_step / (k * t_draft + t_verify)


def predicted_decode_s(per_step_drafted: list[int], per_step_accepted: list[int], costs: dict[str, Any]) -> float:
    """Model forward time of one decode from its rounds (docs/speed.md), with `costs` from `round_costs`:
    `ar` (nothing drafted in any round): rounds x t_ar; otherwise the sum over rounds r of
    t_T(k_r + 1) + t_D1(p_r) + (k_r - 1) t_D, with k_r the tokens drafted in round r, t_T(m) the target's
    m-token block, t_D1(p) the round's first drafter step feeding p tokens (the previous round's correction
    or bonus, plus d_K after a fully accepted round, plus every token of rounds that drafted nothing; p > 3
    is costed as 3) and t_D a one-token drafter step."""
    if not any(per_step_drafted):
        return len(per_step_drafted) * costs["ar_step_s"]
    first, widest = costs["draft_first_s"], max(costs["draft_first_s"])
    total, pending = 0.0, 1
    for k, n in zip(per_step_drafted, per_step_accepted):
        total += costs["target_block_s"][k + 1]
        if k == 0:
            pending += 1
            continue
        total += first[min(pending, widest)] + (k - 1) * costs["draft_step_s"]
        pending = 2 if n == k else 1
    return total


# -- output -----------------------------------------------------------------------------------------

def machine() -> str:
    """One line naming the machine the figures come from."""
    import os
    import platform

    return f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs)"


def publish(text: str, data: dict[str, Any], out: Optional[Any]) -> None:
    """Print a benchmark's markdown; with `out`, write it there and its data beside it (`.json`)."""
    import json
    from pathlib import Path

    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
