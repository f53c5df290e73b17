"""The real `lmms-eval` CLI end to end on the tiny task, checked from the files it writes."""

import json
import shutil
from pathlib import Path

import pytest

from lvspec_eval.metrics import schema
from lvspec_eval.metrics.records import read_records
from testbed.fixtures.cli import PIXELS, TINY_TASK as TASK, outputs, response, run_cli, task_variant
from testbed.fixtures.checkpoint_edits import declare_eos, swap_token_rows

#: every drafting method records its draft schedule (the defaults)
SCHEDULE = {"draft_schedule": "auto", "short_answer_tokens": 32}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_with_bad_doc(tmp_path_factory, task_dir) -> Path:
    dst = tmp_path_factory.mktemp("tasks_bad") / "lvspec_tiny"
    shutil.copytree(task_dir, dst)
    with open(dst / "test.jsonl", "a") as fh:
        fh.write(json.dumps({"id": "missing", "video": "no_such_clip.mp4", "question": "Describe the video.",
                             "answer": "x"}) + "\n")
    return dst


def test_sd_run_records_and_results(tmp_path, tiny_target, tiny_draft, task_with_bad_doc):
    stats = tmp_path / "records.jsonl"
    args = (f"pretrained={tiny_target},draft_pretrained={tiny_draft},method=sd,num_draft_tokens=4,dtype=float32,"
            f"device_map=cpu,{PIXELS},paired_baseline=true,stats_path={stats}")
    proc = run_cli("lvspec_qwen", args, task_with_bad_doc, tmp_path / "out")
    results, samples = outputs(tmp_path / "out")
    records = read_records(stats)
    assert len(samples) == 4 and len(records) == 4, proc.stderr[-3000:]
    by_doc = {r["doc_id"]: r for r in records}
    assert set(by_doc) == {s["doc_id"] for s in samples}

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_target)
    failed = [r for r in records if r.get("error")]
    assert len(failed) == 1 and "no_such_clip.mp4" in failed[0]["error"]
    for s in samples:
        rec = by_doc[s["doc_id"]]
        assert rec["task"] == TASK and rec["split"] == "test" and rec["method"] == "sd"
        if rec.get("error"):
            assert response(s) == ""
            continue
        assert response(s) == rec["text"]
        # sd is lossless: the paired ar decode in the same process gives the same tokens
        assert rec["exact_match_ar"] is True and rec["edit_sim_ar"] == 1.0 and rec["text"] == rec["ar_text"]
        assert rec["new_tokens"] == 24 == len(rec["provenance"]) == len(rec["tokens"])
        assert rec["tau"] == pytest.approx((rec["new_tokens"] - 1) / rec["rounds"])
        assert rec["tau_excl"] == pytest.approx(rec["accepted_exact"] / rec["rounds"])
        assert rec["accepted_loose"] == rec["accepted_shift"] == 0
        assert sum(rec["accepted_per_position"]) == rec["accepted_exact"] and len(rec["accepted_per_position"]) == 4
        assert rec["speedup_decode"] == pytest.approx(rec["ar_decode_s"] / rec["decode_s"])
        assert rec["params"] == {"num_draft_tokens": 4, **SCHEDULE} and rec["draft"] == tiny_draft
        assert rec["total_s"] == pytest.approx(rec["prefill_s"] + rec["decode_s"])
        # per-token text for the report's token view: joins to the full decode, specials spelled out
        for ids, pieces in ((rec["tokens"], rec["token_texts"]), (rec["ar_tokens"], rec["ar_token_texts"])):
            assert len(pieces) == len(ids) and "".join(pieces) == tok.decode(ids, skip_special_tokens=False)

    # every record holds exactly the schema's fields of its kind; vLLM's statistics agree with ours
    for rec in records:
        assert set(rec) == set(schema.written(rec)) and not schema.wrong_kinds(rec), rec.get("error")
        if not rec.get("error"):
            stats = rec["speculative_decoding_stats"]
            assert stats["num_draft_tokens"] == rec["proposed"] and stats["num_spec_tokens"] == 4
            assert stats["num_accepted_draft_tokens"] == rec["accepted_exact"]
            assert stats["draft_acceptance_rate"] == rec["acceptance_rate"]
            assert sum(stats["acceptance_histogram"].values()) == stats["num_spec_steps"] == len(stats["per_step_drafted"])
            assert rec["token_rate_speedup"] == pytest.approx(rec["speedup_decode"])  # lossless: same length as ar

    thr = results["throughput"]
    good = [r for r in records if not r.get("error")]
    mean_tau = sum(r["tau"] for r in good) / len(good)
    assert thr["avg_tau"] == pytest.approx(mean_tau)
    assert thr["avg_exact_match_ar"] == 1.0 and "avg_speedup_decode" in thr
    assert thr["total_gen_tokens"] == 3 * 24 and thr["avg_new_tokens"] == thr["avg_ar_new_tokens"] == 24
    assert not {"avg_samples", "avg_failed", "avg_rank", "avg_world_size"} & set(thr)  # only means as avg_ rows
    assert results["results"][TASK]["exact_match,none"] == pytest.approx(
        sum(float(response(s).strip() == s["target"]) for s in samples) / 4)


def test_unknown_model_arg_is_refused_with_the_valid_list(tmp_path, tiny_target, task_dir):
    proc = run_cli("lvspec_qwen", f"pretrained={tiny_target},num_draft_token=3", task_dir, tmp_path / "out")
    text = proc.stdout + proc.stderr
    assert "unknown model arg(s) num_draft_token" in text and "num_draft_tokens" in text
    assert not list((tmp_path / "out").rglob("*_results.json"))


LLAVA_FRAMES = 8


def test_llava_ov_specvlm_run_is_lossless_with_a_pruned_padded_drafter(tmp_path, tiny_llava_target, tiny_llava_draft,
                                                                      task_dir):
    stats = tmp_path / "r.jsonl"
    args = (f"pretrained={tiny_llava_target},draft_pretrained={tiny_llava_draft},method=specvlm,num_draft_tokens=4,"
            f"dtype=float32,device_map=cpu,max_num_frames={LLAVA_FRAMES},paired_baseline=true,stats_path={stats}")
    proc = run_cli("lvspec_llava_ov", args, task_dir, tmp_path / "out")
    _, samples = outputs(tmp_path / "out")
    records = read_records(stats)
    assert len(records) == len(samples) == 3, proc.stderr[-3000:]
    for r in records:
        assert not r.get("error") and r["method"] == "specvlm"
        assert r["exact_match_ar"] is True and r["text"] == r["ar_text"]
        assert r["video_tokens"] == 129 and r["draft_video_tokens"] == 12  # floor(0.1 * 129)
        assert r["params"] == {"num_draft_tokens": 4, "draft_video_keep": 0.1, "draft_video_mass": 0.4,
                               "draft_video_layer": None, "draft_video_fill": "linspace", **SCHEDULE}


# -- ar == the family's built-in backend on multi-paragraph answers, with every default left unset ----------
# (issue 12, point 1 and "Bad inputs"). lmms-eval adds until=["\n\n"] to a task that sets none; the chat
# qwen2_5_vl ignores it and llava_hf drops it, so neither cuts an answer at a blank line. The tiny models are
# made to write one: the token a model wrote early in an answer trades ids with "\n\n" (swap_token_rows),
# so the model computes as before and the same answer now has a blank line with text on both sides.

BLANK_LINE = 271  # "\n\n" in the Qwen2 vocabulary (Qwen2.5-VL and LLaVA-OneVision)
DOCS = [{"id": f"clip_{i}", "video": f"clip_{i}.mp4", "question": "Describe the video.", "answer": "x"}
        for i in range(3)]
GREEDY = {"temperature": 0, "do_sample": False}  # no until, no max_new_tokens: the defaults apply


@pytest.fixture(scope="module")
def odd_tasks(tmp_path_factory, task_dir) -> Path:
    """lvspec_blank: no until, no max_new_tokens; lvspec_nonlist: until is 5; lvspec_never: a stop string that
    never occurs; lvspec_sampling: temperature 0.7."""
    root = tmp_path_factory.mktemp("odd_tasks")
    videos = task_dir / "videos"
    task_variant(root / "blank", "lvspec_blank", DOCS, videos, GREEDY)
    task_variant(root / "nonlist", "lvspec_nonlist", DOCS[:1], videos, {**GREEDY, "until": 5, "max_new_tokens": 16})
    task_variant(root / "never", "lvspec_never", DOCS[1:2], videos,
                 {**GREEDY, "until": ["<|lvspec_never|>"], "max_new_tokens": 16})
    task_variant(root / "sampling", "lvspec_sampling", DOCS[2:], videos, {"temperature": 0.7, "max_new_tokens": 16})
    return root


def blank_line_checkpoint(src: str, dst: Path, answers: dict[int, list[int]]) -> tuple[str, int, int, int]:
    """(checkpoint, doc, index, token): a copy of `src` in which `token`, first written at `index`
    (3..12) of the answer to `doc`, trades ids with "\n\n"."""
    assert all(BLANK_LINE not in toks for toks in answers.values())
    for doc, toks in sorted(answers.items()):
        for i in range(3, min(13, len(toks) - 3)):
            if toks.index(toks[i]) == i and toks[i] < 151643:  # a first occurrence, not a special token
                return str(swap_token_rows(src, dst, toks[i], BLANK_LINE)), doc, i, toks[i]
    raise AssertionError(f"no answer of {sorted(answers)} is long enough; change the tiny models' seeds")


def renamed(tokens: list[int], token: int) -> list[int]:
    return [BLANK_LINE if t == token else token if t == BLANK_LINE else t for t in tokens]


def ar_records(model: str, args: str, tasks: Path, out: Path, names: str,
               extra: tuple[str, ...] = ()) -> dict[str, dict[int, dict]]:
    stats = out.with_suffix(".jsonl")
    proc = run_cli(model, f"{args},method=ar,device_map=cpu,stats_path={stats}", tasks, out, tasks=names,
                   extra=list(extra))
    records: dict[str, dict[int, dict]] = {}
    for r in read_records(stats) if stats.exists() else []:
        records.setdefault(r["task"], {})[r["doc_id"]] = r
    assert set(records) == set(names.split(",")), proc.stderr[-3000:]
    return records


def check_same_answers(ours: Path, theirs: Path, names: str) -> dict[str, list[str]]:
    answers = {}
    for task in names.split(","):
        results, a = outputs(ours, task)
        _, b = outputs(theirs, task)
        if task == "lvspec_blank":  # lmms-eval gave the task its default stop string
            assert results["configs"][task]["generation_kwargs"]["until"] == ["\n\n"]
        assert [s["doc_id"] for s in a] == [s["doc_id"] for s in b]
        assert [response(s) for s in a] == [response(s) for s in b], task
        answers[task] = [response(s) for s in a]
    return answers


def check_blank_line(answers: list[str], records: dict[int, dict], before: dict[int, list[int]], doc: int,
                     index: int, token: int) -> None:
    head, sep, tail = answers[doc].partition("\n\n")
    assert sep and head.strip() and tail.strip(), answers[doc]  # a cut at the blank line would lose `tail`
    for d, rec in records.items():  # the renamed model wrote the same answers, the blank line in place of `token`
        assert rec["tokens"] == renamed(before[d], token) and rec["text"] == answers[d]
        assert rec["until"] == [] and rec["stop_reason"] in ("eos", "max_new_tokens")
    assert records[doc]["tokens"][index] == BLANK_LINE


@pytest.fixture(scope="module")
def qwen_answers(tmp_path_factory, tiny_target, odd_tasks) -> dict[int, list[int]]:
    """`lvspec_qwen method=ar` with no dtype and no max_new_tokens: doc -> tokens of lvspec_blank."""
    out = tmp_path_factory.mktemp("qwen_pre") / "out"
    records = ar_records("lvspec_qwen", f"pretrained={tiny_target},{PIXELS}", odd_tasks, out, "lvspec_blank")
    return {d: r["tokens"] for d, r in records["lvspec_blank"].items()}


def test_qwen_ar_equals_builtin_qwen2_5_vl_on_blank_lines_and_odd_generation_kwargs(tmp_path, tiny_target, odd_tasks,
                                                                                   qwen_answers):
    ckpt, doc, index, token = blank_line_checkpoint(tiny_target, tmp_path / "ckpt", qwen_answers)
    names = "lvspec_blank,lvspec_nonlist,lvspec_never"
    records = ar_records("lvspec_qwen", f"pretrained={ckpt},{PIXELS}", odd_tasks, tmp_path / "ours",
                         names + ",lvspec_sampling")
    run_cli("qwen2_5_vl", f"pretrained={ckpt},device_map=cpu,{PIXELS}", odd_tasks, tmp_path / "theirs", tasks=names)
    answers = check_same_answers(tmp_path / "ours", tmp_path / "theirs", names)
    check_blank_line(answers["lvspec_blank"], records["lvspec_blank"], qwen_answers, doc, index, token)
    blank = records["lvspec_blank"][doc]
    assert blank["dtype"] == "bfloat16" and blank["max_new_tokens"] == 128  # the chat qwen2_5_vl's defaults
    assert records["lvspec_nonlist"][0]["until"] == [] and records["lvspec_never"][0]["max_new_tokens"] == 16
    (sampling,) = records["lvspec_sampling"].values()  # refused per sample, with the fix, and recorded
    assert "asks for sampling (temperature=0.7)" in sampling["error"] and "temperature: 0" in sampling["error"]
    _, (sample,) = outputs(tmp_path / "ours", "lvspec_sampling")
    assert response(sample) == ""


def test_qwen_answer_that_is_only_eos_equals_builtin(tmp_path, tiny_target, odd_tasks, qwen_answers):
    """A checkpoint whose EOS is the first token it writes for a doc: an empty answer, recorded."""
    from transformers import AutoTokenizer

    first = qwen_answers[1][0]
    eos = AutoTokenizer.from_pretrained(tiny_target).convert_ids_to_tokens(first)
    ckpt = declare_eos(tiny_target, tmp_path / "ckpt", eos)
    records = ar_records("lvspec_qwen", f"pretrained={ckpt},{PIXELS}", odd_tasks, tmp_path / "ours", "lvspec_never")
    run_cli("qwen2_5_vl", f"pretrained={ckpt},device_map=cpu,{PIXELS}", odd_tasks, tmp_path / "theirs",
            tasks="lvspec_never")
    answers = check_same_answers(tmp_path / "ours", tmp_path / "theirs", "lvspec_never")
    (rec,) = records["lvspec_never"].values()
    assert answers["lvspec_never"] == [""] and rec["text"] == ""
    assert rec["tokens"] == [first] and rec["new_tokens"] == 1 and rec["stop_reason"] == "eos" and rec["rounds"] == 0


def test_llava_ov_ar_equals_builtin_llava_hf_on_blank_lines_and_odd_generation_kwargs(tmp_path, tiny_llava_target,
                                                                                     odd_tasks):
    """`lvspec_llava_ov` == `llava_hf --force_simple` (decord frames), no dtype given on either side: the
    checkpoint's own float32 (llava_hf's dtype="auto"), max_new_tokens 1024, `until` dropped. One doc per task
    (--limit 1): the random tiny model writes all 1024 tokens, about 6 s per doc and run here."""
    frames, limit = f"max_num_frames={LLAVA_FRAMES}", ("--limit", "1")
    pre = ar_records("lvspec_llava_ov", f"pretrained={tiny_llava_target},{frames}", odd_tasks, tmp_path / "pre",
                     "lvspec_blank", limit)
    before = {d: r["tokens"] for d, r in pre["lvspec_blank"].items()}
    ckpt, doc, index, token = blank_line_checkpoint(tiny_llava_target, tmp_path / "ckpt", before)
    names = "lvspec_blank,lvspec_never"
    records = ar_records("lvspec_llava_ov", f"pretrained={ckpt},{frames}", odd_tasks, tmp_path / "ours",
                         names + ",lvspec_nonlist", limit)
    run_cli("llava_hf", f"pretrained={ckpt},device_map=cpu,max_frames_num={LLAVA_FRAMES}", odd_tasks,
            tmp_path / "theirs", tasks=names, extra=["--force_simple", *limit])
    answers = check_same_answers(tmp_path / "ours", tmp_path / "theirs", names)
    check_blank_line(answers["lvspec_blank"], records["lvspec_blank"], before, doc, index, token)
    blank = records["lvspec_blank"][doc]
    assert blank["dtype"] == "auto" and blank["max_new_tokens"] == 1024 and blank["family"] == "llava_onevision"
    assert all(r["video_tokens"] == LLAVA_FRAMES * 16 + 1 and r["draft_video_tokens"] is None
               for r in records["lvspec_blank"].values())
    # llava_hf raises ValueError on an `until` that is neither a string nor a list: a clear error, recorded
    (nonlist,) = records["lvspec_nonlist"].values()
    assert "until=5 (int) is not a string or a list of strings (lmms-eval's llava_hf" in nonlist["error"]


# -- ar == the built-in under the checkpoint's generation config (lvspec_eval/engine/processors.py) ------------
def test_qwen_ar_equals_builtin_qwen2_5_vl_under_the_checkpoints_repetition_penalty(tmp_path, tiny_penalty_target,
                                                                                   tiny_repetitive_target, odd_tasks):
    """Real Qwen2.5-VL Instruct checkpoints ship repetition_penalty 1.05 (generation_config.json), which the chat
    qwen2_5_vl applies through generate's logits processors. Both sides at their defaults (bfloat16, 128 tokens)."""
    names = "lvspec_blank"
    records = ar_records("lvspec_qwen", f"pretrained={tiny_penalty_target},{PIXELS}", odd_tasks, tmp_path / "ours", names)
    run_cli("qwen2_5_vl", f"pretrained={tiny_penalty_target},device_map=cpu,{PIXELS}", odd_tasks, tmp_path / "theirs",
            tasks=names)
    answers = check_same_answers(tmp_path / "ours", tmp_path / "theirs", names)
    assert all(answers[names]) and all(r["dtype"] == "bfloat16" for r in records[names].values())
    # the penalty acted: the same weights without it (a plain argmax) answer every doc otherwise
    plain = ar_records("lvspec_qwen", f"pretrained={tiny_repetitive_target},{PIXELS}", odd_tasks, tmp_path / "plain",
                       names)
    for doc, rec in records[names].items():
        assert rec["tokens"] != plain[names][doc]["tokens"], doc
