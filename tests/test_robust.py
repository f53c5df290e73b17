"""Robustness and scale-out through the real `lmms-eval` CLI (issue 6): bad inputs, refusals,
resume after SIGKILL, data-parallel processes, a split device map, determinism.

One tiny-model baseline run (`random` method: seeded loose acceptance, paired `ar` decode) is
shared; the other runs are compared with it field by field, timings aside."""

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from lvspec_eval.lmms.backend import cut_at_until
from lvspec_eval.lmms.run_metrics import RUN_MEANS
from lvspec_eval.lmms.run_lock import claim_stats_path
from lvspec_eval.metrics.records import read_records
from lvspec_eval.report.inputs import load_inputs
from lvspec_eval.report.pairing import build_groups
from testbed.fixtures.cli import (PIXELS, TIMING_FIELDS, cli_command, copy_tiny_task, outputs, response, run_cli,
                                  start_cli, task_variant, without)
from testbed.fixtures.checkpoint_edits import declare_eos

pytestmark = pytest.mark.slow

TASK = "lvspec_rb"
DOCS = [{"id": f"d{i}", "video": f"clip_{i % 3}.mp4", "question": "Describe the video.", "answer": "x"}
        for i in range(4)]
K = 4
SETTINGS = f"method=random,random_accept=0.5,seed=3,num_draft_tokens={K},dtype=float32,{PIXELS},paired_baseline=true"
#: fields that name where a record was made, not what it holds
PLACE_FIELDS = ("rank", "world_size")


def comparable(records) -> dict:
    return {r["doc_id"]: without(r, TIMING_FIELDS + PLACE_FIELDS) for r in records}


def strict_lines(path: Path) -> list[dict]:
    """Every line of a record file, each a complete JSON object ending in a newline."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), f"{path} ends in a partial line"
    return [json.loads(line) for line in raw.decode().splitlines()]


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory) -> Path:
    return copy_tiny_task(tmp_path_factory.mktemp("tiny") / "lvspec_tiny") / "videos"


@pytest.fixture(scope="module")
def rb_task(tmp_path_factory, clips_dir) -> Path:
    return task_variant(tmp_path_factory.mktemp("rb") / TASK, TASK, DOCS, clips_dir)


def model_args(target: str, draft: str, stats: Path, extra: str = "") -> str:
    return f"pretrained={target},draft_pretrained={draft},{SETTINGS},device_map=cpu,stats_path={stats}{extra}"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_target, tiny_draft, rb_task) -> dict:
    """The single-process reference run: doc_id -> record."""
    root = tmp_path_factory.mktemp("baseline")
    proc = run_cli("lvspec_qwen", model_args(tiny_target, tiny_draft, root / "r.jsonl"), rb_task, root / "out",
                   tasks=TASK)
    records = read_records(root / "r.jsonl")
    assert len(records) == len(DOCS) and not any(r.get("error") for r in records), proc.stderr[-3000:]
    _, samples = outputs(root / "out", TASK)
    assert [response(s) for s in samples] == [r["text"] for r in sorted(records, key=lambda r: r["doc_id"])]
    # the seed matters: `random` accepted some mismatching drafts, so identical runs are not trivially identical
    assert sum(r["accepted_loose"] for r in records) > 0
    return {r["doc_id"]: r for r in records}


# -- 5. determinism -------------------------------------------------------------------------------

def test_same_seed_gives_identical_records(tmp_path, tiny_target, tiny_draft, rb_task, baseline):
    run_cli("lvspec_qwen", model_args(tiny_target, tiny_draft, tmp_path / "r.jsonl"), rb_task, tmp_path / "out",
            tasks=TASK)
    again = read_records(tmp_path / "r.jsonl")
    assert comparable(again) == comparable(baseline.values())
    assert all(r["rank"] == 0 and r["world_size"] == 1 for r in again)


# -- 2. resume after SIGKILL -------------------------------------------------------------------------

def test_sigkill_then_resume_completes_without_duplicates(tmp_path, tiny_target, tiny_draft, rb_task, baseline):
    stats = tmp_path / "r.jsonl"
    args = model_args(tiny_target, tiny_draft, stats)
    running, kill = start_cli(cli_command("lvspec_qwen", args, rb_task, tmp_path / "killed", TASK), tmp_path)
    deadline = time.monotonic() + 600
    while not (stats.exists() and stats.read_bytes().count(b"\n") >= 1):
        assert running() and time.monotonic() < deadline, "the run ended before writing a record"
        time.sleep(0.05)
    kill()  # SIGKILL
    before = strict_lines(stats)  # the killed run's file: whole lines only
    assert 1 <= len(before) < len(DOCS), "the kill did not land mid-run"
    # a torn write (power loss; one write(2) per record makes it rare) must not poison the file either
    with open(stats, "ab") as fh:
        fh.write(b'{"record_version":1,"task":"lvspec_rb","sp')

    rerun = run_cli("lvspec_qwen", args, rb_task, tmp_path / "rerun", tasks=TASK)
    log = rerun.stdout + rerun.stderr
    assert "ended in a partial line" in log and f"resumed: {len(before)} of {len(DOCS)} samples" in log
    after = strict_lines(stats)
    assert after[: len(before)] == before  # the old records are kept as they were
    assert sorted(r["doc_id"] for r in after) == list(range(len(DOCS)))  # complete, no duplicates
    assert comparable(after) == comparable(baseline.values())
    _, samples = outputs(tmp_path / "rerun", TASK)  # skipped requests are answered from the records
    assert [response(s) for s in samples] == [r["text"] for r in sorted(after, key=lambda r: r["doc_id"])]


# -- 3. data parallel --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_parallel_two_processes_equal_single_process(tmp_path, tiny_target, tiny_draft, rb_task, baseline):
    accelerate = Path(sys.executable).with_name("accelerate")
    # on a CPU-only machine `--multi_gpu` is what starts several processes (torch.distributed, gloo)
    launcher = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                "-m", "lmms_eval"]
    stats = tmp_path / "dp" / "r.jsonl"
    proc = run_cli("lvspec_qwen", model_args(tiny_target, tiny_draft, stats), rb_task, tmp_path / "out", tasks=TASK,
                   launcher=launcher)
    files = sorted((tmp_path / "dp").glob("*.jsonl"))
    assert [f.name for f in files] == ["r_rank0.jsonl", "r_rank1.jsonl"], proc.stderr[-3000:]
    for rank, path in enumerate(files):
        records = read_records(path)
        assert records and all(r["rank"] == rank and r["world_size"] == 2 for r in records)
    # lvspec-report reads the folder: one group holding every sample once
    inputs = load_inputs([tmp_path / "dp"])
    groups = build_groups(inputs)
    assert len(groups) == 1 and not inputs.warnings
    assert comparable(groups[0].records.values()) == comparable(baseline.values())
    results, samples = outputs(tmp_path / "out", TASK)
    assert [response(s) for s in samples] == [baseline[d]["text"] for d in sorted(baseline)]
    # results.json's throughput block covers both ranks' samples (gathered before lmms-eval's log_metrics),
    # and holds only means as avg_ rows: worked out here from the single-process records
    thr, every = results["throughput"], list(baseline.values())
    assert thr["total_gen_tokens"] == sum(r["new_tokens"] for r in every)
    assert thr["avg_latency"] == pytest.approx(thr["total_elapsed_time"] / len(DOCS))
    spec = [r["speculative_decoding_stats"] for r in every]
    for key, values in (("tau", [r["tau"] for r in every]), ("new_tokens", [r["new_tokens"] for r in every]),
                        ("ar_new_tokens", [r["ar_new_tokens"] for r in every]),
                        ("exact_match_ar", [float(r["exact_match_ar"]) for r in every]),
                        ("edit_sim_ar", [r["edit_sim_ar"] for r in every]),
                        ("mean_acceptance_length", [s["mean_acceptance_length"] for s in spec]),
                        ("draft_acceptance_rate", [s["draft_acceptance_rate"] for s in spec])):
        assert thr[f"avg_{key}"] == pytest.approx(sum(values) / len(values), abs=1e-12), key
    assert {k for k in thr if k.startswith("avg_")} == {f"avg_{k}" for k in RUN_MEANS} | {"avg_speed", "avg_latency"}


# -- 4. model parallel: an explicit device map that splits the layers ------------------------------

def test_split_device_map_is_honoured_and_changes_nothing(tmp_path, tiny_target, tiny_draft, rb_task, baseline):
    """CPU only has one device: the maps split the decoder layers between "cpu" and "disk" (weights
    streamed in by accelerate's hooks, the machinery of a multi-GPU split)."""
    layers = "model.language_model.layers"
    common = {"model.visual": "cpu", "model.language_model.embed_tokens": "cpu", "model.language_model.norm": "cpu",
              "model.language_model.rotary_emb": "cpu", "lm_head": "cpu"}
    (tmp_path / "target_map.json").write_text(json.dumps({**common, f"{layers}.0": "cpu", f"{layers}.1": "disk"}))
    (tmp_path / "draft_map.json").write_text(json.dumps({**common, f"{layers}.0": "disk", f"{layers}.1": "cpu"}))
    args = model_args(tiny_target, tiny_draft, tmp_path / "r.jsonl").replace("device_map=cpu,", "")
    args += (f",device_map={tmp_path / 'target_map.json'},draft_device_map={tmp_path / 'draft_map.json'},"
             f"offload_folder={tmp_path / 'offload'}")
    proc = run_cli("lvspec_qwen", args, rb_task, tmp_path / "out", tasks=TASK, extra=["--limit", "2"])
    log = proc.stdout + proc.stderr
    assert "target placement:" in log and f"'{layers}.1': 'disk'" in log and f"'{layers}.0': 'disk'" in log
    placed = [line for line in log.splitlines() if "placement:" in line]
    assert len(placed) == 2 and all("'meta':" in line for line in placed), placed  # disk layers: not resident
    records = read_records(tmp_path / "r.jsonl")
    assert len(records) == 2
    ours, ref = comparable(records), {d: v for d, v in comparable(baseline.values()).items() if d < 2}
    assert ours == ref, {d: {k: (ours[d].get(k), ref[d].get(k)) for k in set(ours[d]) | set(ref[d])
                             if ours[d].get(k) != ref[d].get(k)} for d in ref}


# -- 1. bad inputs: each doc gets its own failed-sample record, the run goes on -------------------------

def make_bad_videos(folder: Path, good: Path) -> None:
    import av
    from PIL import Image

    from testbed.fixtures.video import _clip_frames

    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end: lost
    (folder / "corrupt.mp4").write_bytes(bytes((i * 7919) % 251 for i in range(5000)))
    with av.open(str(folder / "faststart.mp4"), mode="w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = 112
        stream.pix_fmt = "yuv420p"
        for rgb in _clip_frames(0, 16, 112):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    fast = (folder / "faststart.mp4").read_bytes()
    (folder / "faststart_truncated.mp4").write_bytes(fast[: len(fast) * 6 // 10])  # index kept, frames cut
    out = av.open(str(folder / "zero_frames.mp4"), mode="w", format="mp4")
    stream = out.add_stream("libx264", rate=8)
    stream.width = stream.height = 112
    stream.pix_fmt = "yuv420p"
    out.start_encoding()
    out.close()
    Image.new("RGB", (112, 112), (200, 30, 30)).save(folder / "still.png")
    shutil.copy(folder / "still.png", folder / "still_named_as.mp4")


BAD_DOCS = [  # (video, question, what the record's error must say; None: a good doc)
    ("clip_0.mp4", "Describe the video.", None),
    ("no_such_clip.mp4", "Describe the video.", "does not exist"),
    ("truncated.mp4", "Describe the video.", "cannot read video"),
    ("faststart_truncated.mp4", "Describe the video.", "cannot read video"),
    ("corrupt.mp4", "Describe the video.", "cannot read video"),
    ("zero_frames.mp4", "Describe the video.", "cannot read video"),
    ("still.png", "Describe the video.", "an image ("),
    ("still_named_as.mp4", "Describe the video.", "still image where a video is expected"),
    ("clip_1.mp4", "", "empty prompt"),
    ("clip_2.mp4", "Describe the video. " * 150, "exceeds the context limit (400)"),
    ("clip_1.mp4", "Describe the video.", None),
]


#: generation kwargs that cannot be honoured, checked per request: (task, kwargs, the fix its records must name)
UNHONOURABLE = [
    ("lvspec_rb_temperature", {"temperature": 0.7, "max_new_tokens": 8},
     "asks for sampling (temperature=0.7); lvspec backends decode greedily only: set temperature: 0"),
    ("lvspec_rb_mnt0", {"temperature": 0, "do_sample": False, "max_new_tokens": 0},
     "max_new_tokens=0: at least one new token"),
]


def test_bad_docs_and_generation_kwargs_get_failed_records_and_max_new_tokens_1(tmp_path, tiny_target, tiny_draft,
                                                                                 clips_dir):
    """One run: bad documents, a one-token request, and two tasks whose generation kwargs cannot be honoured
    (each of their samples gets a failed record with the fix, logged once per message); the run goes on."""
    videos = tmp_path / "videos"
    shutil.copytree(clips_dir, videos)
    make_bad_videos(videos, videos / "clip_0.mp4")
    docs = [{"id": f"b{i}", "video": v, "question": q, "answer": "x"} for i, (v, q, _) in enumerate(BAD_DOCS)]
    tasks = tmp_path / "tasks"
    task_variant(tasks / "bad", "lvspec_rb_bad", docs, videos)
    task_variant(tasks / "one", "lvspec_rb_one", docs[:1], videos,
                 {"max_new_tokens": 1, "temperature": 0, "do_sample": False, "until": ["<|lvspec_never|>"]})
    for name, gen, _ in UNHONOURABLE:
        task_variant(tasks / name, name, docs[:2], videos, gen)
    stats = tmp_path / "r.jsonl"
    args = (f"pretrained={tiny_target},draft_pretrained={tiny_draft},method=sd,num_draft_tokens={K},dtype=float32,"
            f"device_map=cpu,{PIXELS},paired_baseline=true,max_length=400,stats_path={stats}")
    names = ",".join(["lvspec_rb_bad", "lvspec_rb_one", *(name for name, _, _ in UNHONOURABLE)])
    proc = run_cli("lvspec_qwen", args, tasks, tmp_path / "out", tasks=names)
    records = read_records(stats)
    bad = {r["doc_id"]: r for r in records if r["task"] == "lvspec_rb_bad"}
    assert sorted(bad) == list(range(len(BAD_DOCS))), proc.stderr[-3000:]
    _, samples = outputs(tmp_path / "out", "lvspec_rb_bad")
    assert len(samples) == len(BAD_DOCS)
    for (video, _, expected), sample in zip(BAD_DOCS, samples):
        rec = bad[sample["doc_id"]]
        if expected is None:
            assert "error" not in rec and rec["exact_match_ar"] is True and response(sample) == rec["text"] != ""
        else:
            assert expected in rec["error"], (video, rec["error"])
            assert response(sample) == "" and "tokens" not in rec
    assert "still_named_as.mp4" in bad[7]["error"] and "no_such_clip.mp4" in bad[1]["error"]

    (one,) = [r for r in records if r["task"] == "lvspec_rb_one"]
    assert one["new_tokens"] == 1 and one["rounds"] == 0 and one["proposed"] == 0 and one["tau"] is None
    assert one["stop_reason"] == "max_new_tokens" and one["provenance"] == "P" and one["max_new_tokens"] == 1
    assert one["tokens"] == one["ar_tokens"] == bad[0]["tokens"][:1]
    _, (sample,) = outputs(tmp_path / "out", "lvspec_rb_one")
    assert response(sample) == one["text"]

    log = proc.stdout + proc.stderr
    for name, _, expected in UNHONOURABLE:
        logged = [line for line in log.splitlines() if "not decoded: " in line and expected in line]
        assert len(logged) == 1 and "2 request(s) not decoded: " in logged[0], log[-3000:]  # once for both samples
        failed = [r for r in records if r["task"] == name]
        assert len(failed) == 2 and all(expected in r["error"] and "tokens" not in r for r in failed)
        _, samples = outputs(tmp_path / "out", name)
        assert [response(s) for s in samples] == ["", ""]


# -- 1. refused before any work: a clear message, no results, no records ---------------------------------

def drafter_with_other_tokenizer(src: str, dst: Path) -> str:
    shutil.copytree(src, dst)
    text = (dst / "tokenizer.json").read_text()
    assert '"<tool_call>"' in text
    (dst / "tokenizer.json").write_text(text.replace('"<tool_call>"', '"<tool_call_v2>"'))
    return str(dst)


def refusal(case: str, tmp_path: Path, tiny_target: str, tiny_draft: str):
    """(target, draft, stats, extra settings, the message the refusal must carry, another run holding stats)."""
    stats = tmp_path / "r.jsonl"
    target, draft, settings, other_run = tiny_target, tiny_draft, "", None
    if case == "stats_path_in_use":  # another run (this test process) appends to the same record file
        other_run = claim_stats_path(stats)
        expected = f"stats_path '{stats}' is in use by another run: pid {os.getpid()} on "
    elif case == "stats_path_unwritable":  # a file where a folder is needed: no write can succeed, not even as root
        (tmp_path / "a_file").write_text("x")
        stats = tmp_path / "a_file" / "r.jsonl"
        expected = f"stats_path '{stats}' cannot be written"
    elif case == "unknown_method":
        settings, expected = ",method=beam", "method='beam' is not valid; choose one of: ar, sd"
    elif case == "missing_checkpoint":
        target, expected = str(tmp_path / "no_such_ckpt"), "does not exist"
    else:
        draft = drafter_with_other_tokenizer(tiny_draft, tmp_path / "draft_v2")
        expected = "use different tokenizers: vocabularies differ"
    return target, draft, stats, settings, expected, other_run


@pytest.mark.parametrize("case", ["other_tokenizer", "stats_path_in_use"])
def test_refused_before_any_work(case, tmp_path, tiny_target, tiny_draft, rb_task):
    """Through the CLI: the message reaches the user, no results, no records, no weights loaded (the other
    refusals take the same path; they are checked on the backend in the next test)."""
    target, draft, stats, settings, expected, other_run = refusal(case, tmp_path, tiny_target, tiny_draft)
    try:
        proc = run_cli("lvspec_qwen", model_args(target, draft, stats, settings), rb_task, tmp_path / "out", tasks=TASK,
                       extra=["--limit", "1"])
    finally:
        if other_run is not None:
            other_run.release()
    log = proc.stdout + proc.stderr
    assert expected in log, log[-3000:]
    assert not list((tmp_path / "out").rglob("*_results.json")) and not stats.exists()
    assert "Loading weights" not in log  # refused before the weights load
    if case == "other_tokenizer":
        assert "<tool_call_v2>" in log


@pytest.mark.parametrize("case", ["unknown_method", "missing_checkpoint", "stats_path_unwritable", "stats_path_in_use",
                                  "other_tokenizer"])
def test_the_backend_refuses_before_loading_weights(case, tmp_path, tiny_target, tiny_draft, monkeypatch):
    """Every refusal on the backend constructor lmms-eval calls (`create_from_arg_string`, as the CLI does): the
    message, no record file, and no weights loaded."""
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter
    from lvspec_eval.lmms.qwen import LVSpecQwen

    def load(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(QwenVLAdapter, "load", classmethod(load))
    target, draft, stats, settings, expected, other_run = refusal(case, tmp_path, tiny_target, tiny_draft)
    try:
        with pytest.raises(Exception) as refused:
            LVSpecQwen.create_from_arg_string(model_args(target, draft, stats, settings))
    finally:
        if other_run is not None:
            other_run.release()
    assert expected in str(refused.value) and not isinstance(refused.value, AssertionError), refused.value
    assert not stats.exists()


# -- 1. EOS from the drafter mid-block and at the block's end, `until` across a round boundary --------

def slot(index: int, k: int) -> int:
    """Position of emitted token `index` (>= 1) in its round when every draft is accepted: 1..k are
    drafts, k + 1 the bonus (the drafter is the target itself)."""
    return (index - 1) % (k + 1) + 1


def plan_eos(ar: dict, mid: bool) -> tuple[int, int, int]:
    """(K, doc, index): a token whose first occurrence in the doc's greedy output sits mid-block
    (1 < slot < K) or at the block's end (slot == K) when drafted K at a time."""
    for k in range(3, 7):
        for doc, toks in sorted(ar.items()):
            for i in range(2, 16):
                if toks.index(toks[i]) == i and (1 < slot(i, k) < k if mid else slot(i, k) == k):
                    return k, doc, i
    raise AssertionError("no token of the baseline's greedy outputs fits; change the tiny models' seeds")


def plan_until(tok, toks: list[int], k: int) -> tuple[str, int]:
    """(until, n): a 3-4 character string whose first occurrence spans the boundary between round
    m - 1 and round m (m >= 2), and n, the number of tokens emitted by the end of round m."""
    for m in range(2, 4):
        b = 1 + (k + 1) * (m - 1)  # first token of round m
        head = tok.decode(toks[:b], skip_special_tokens=True)
        full = tok.decode(toks[: b + 1], skip_special_tokens=True)
        tail = full[len(head):]
        until = head[-2:] + tail[:2]
        if full.startswith(head) and tail and len(head) >= 2 and until not in head and "\ufffd" not in until:
            return until, (k + 1) * m + 1
    raise AssertionError("no round boundary with a clean split; change the tiny models' seeds")


@pytest.mark.parametrize("where", ["mid_block", "block_end"])
def test_drafter_eos_and_until_across_rounds(where, tmp_path, tiny_target, clips_dir, baseline):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_target)
    ar = {d: baseline[d]["ar_tokens"] for d in range(3)}  # docs 0..2: the three clips
    k, doc, index = plan_eos(ar, where == "mid_block")
    eos = ar[doc][index]
    target = str(declare_eos(tiny_target, tmp_path / "target", tok.convert_ids_to_tokens(eos)))
    tasks = tmp_path / "tasks"
    task_variant(tasks / "eos", "lvspec_rb_eos", [DOCS[doc]], clips_dir)
    names = "lvspec_rb_eos"
    until_doc = until = None
    if where == "mid_block":  # the same run also stops on an `until` string spanning two rounds
        until_doc = next(d for d in range(3) if d != doc)
        until, n_until = plan_until(tok, ar[until_doc], k)
        assert eos not in ar[until_doc][:n_until]
        task_variant(tasks / "until", "lvspec_rb_until", [DOCS[until_doc]], clips_dir,
                     {"max_new_tokens": 24, "temperature": 0, "do_sample": False, "until": [until]})
        names += ",lvspec_rb_until"
    stats = tmp_path / "r.jsonl"
    # until_policy=honour: lvspec_qwen ignores `until` by default, as lmms-eval's chat qwen2_5_vl does
    # draft_schedule=fixed: rounds aligned from the first token (plan_eos places the EOS in a block)
    args = (f"pretrained={target},draft_pretrained=self,draft_video_keep=1.0,method=sd,num_draft_tokens={k},"
            "draft_schedule=fixed,"
            f"dtype=float32,device_map=cpu,{PIXELS},paired_baseline=true,until_policy=honour,stats_path={stats}")
    proc = run_cli("lvspec_qwen", args, tasks, tmp_path / "out", tasks=names)
    records = {r["task"]: r for r in read_records(stats)}
    assert set(records) == set(names.split(",")), proc.stderr[-3000:]

    rec = records["lvspec_rb_eos"]
    rounds, j = (index - 1) // (k + 1), slot(index, k)
    assert j < k if where == "mid_block" else j == k
    assert rec["tokens"] == ar[doc][: index + 1] and rec["stop_reason"] == "eos"
    assert rec["provenance"] == "P" + ("E" * k + "B") * rounds + "E" * j  # no bonus after the drafted EOS
    assert rec["proposed"] == rounds * k + j and rec["accepted_exact"] == rec["proposed"]
    assert rec["exact_match_ar"] is True
    assert rec["text"] == tok.decode(ar[doc][:index], skip_special_tokens=True)
    _, (sample,) = outputs(tmp_path / "out", "lvspec_rb_eos")
    assert response(sample) == rec["text"]

    if until is not None:
        rec = records["lvspec_rb_until"]
        # the round that completes `until` ends later (n_until); the tokens after the completing one are
        # dropped, so sd stops on the same token as ar (which checks after every token)
        first = next(i for i in range(1, n_until + 1)
                     if until in tok.decode(ar[until_doc][:i], skip_special_tokens=True))
        assert first < n_until
        assert rec["stop_reason"] == "until" and rec["tokens"] == ar[until_doc][:first]
        full = tok.decode(ar[until_doc][:first], skip_special_tokens=True)
        assert until in full and rec["text"] == cut_at_until(full, (until,)) and until not in rec["text"]
        assert rec["ar_text"] == rec["text"] and rec["exact_match_ar"] is True and rec["edit_sim_ar"] == 1.0
        assert len(rec["provenance"]) == len(rec["tokens"])  # acceptance counts follow the cut
        assert rec["accepted_exact"] == rec["provenance"].count("E") == sum(rec["accepted_per_position"])
        _, (sample,) = outputs(tmp_path / "out", "lvspec_rb_until")
        assert response(sample) == rec["text"]
