"""`lvspec-report` on hand-made record files whose numbers are worked out by hand below.

The fixture `runs` writes one task `cap` (split test), target org/T, drafter org/D, bfloat16:

  ar      records, docs 0-2        decode_s 4.0 / 2.0 / 3.0, total_s 4.5 / 2.5 / 4.0
          lmms-eval acc            1.0 / 1.0 / 0.5                         -> score 2.5 / 3
  sd      records, K=2, no paired_baseline (paired with the ar run per doc)
          doc 0  tokens == ar, tau 4/2 = 2, 2 of 4 accepted, decode 2.0, total 2.5
          doc 1  tokens [1,2,4] vs ar [1,2,3] (edit sim 2/3), tau 2/1 = 2, 1 of 2 accepted, decode 1.0, total 1.5
          doc 2  failed
          no lmms-eval outputs                                             -> score unknown
  lvspec  records, K=4, paired_baseline=true (its own ar timings take precedence over the ar run;
          its ar tokens are the ar run's: 5 / 3 / 4 tokens)
          doc 0  9 tokens, tau 8/2 = 4, tau_excl 6/2 = 3, exact 4 loose 2 shift 0 of 8, decode 1.0 vs 4.0,
                 total 1.5 vs 4.5, token rate (8/1.0) / (4/4.0) = 8
          doc 1  7 tokens, tau 6/2 = 3, tau_excl 4/2 = 2, exact 3 loose 0 shift 1 of 8, decode 0.5 vs 2.0,
                 total 1.0 vs 2.5, token rate (6/0.5) / (2/2.0) = 12
          doc 2  3 tokens, tau 2/1 = 2, tau_excl 1/1 = 1, exact 1 of 4, decode 1.0 vs 3.0, total 2.0 vs 4.0,
                 token rate (2/1.0) / (3/3.0) = 2
          pooled: tau 16/5 = 3.2, tau_excl 11/5 = 2.2, speedup 9/2.5 = 3.6, token rate (16/2.5) / (9/9) = 6.4
          (longer answers than ar: more tokens per second than the time ratio says)
          lmms-eval acc            1.0 / 0.5 / 0.5 -> score 2/3, retention 2.0 / 2.5 = 0.8
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lvspec_eval.report.check import Thresholds, compare, failures, load_baseline, parse_fraction
from lvspec_eval.report.inputs import ReportInputError, load_inputs
from lvspec_eval.report.pairing import build_groups
from lvspec_eval.report.summary import bootstrap_ratio, render, summarize

TASK = "cap"
#: LVSpecArgs(method="lvspec", num_draft_tokens=4).rule_params(): the paper's defaults, pruned drafter
LVSPEC_PARAMS = {"num_draft_tokens": 4, "relax_ratio": 0.7, "top_n": 10, "shift_window": 2, "anchor_rule": "rank",
                 "anchor_side": "both", "relevance_repr": "embedding", "relevance_layer": -1, "draft_video_keep": 0.1,
                 "draft_video_mass": 0.4, "draft_video_layer": None, "draft_video_fill": "linspace",
                 "draft_schedule": "auto", "short_answer_tokens": 32}


def record(method, doc_id, **fields):
    base = {"record_version": 1, "lvspec_eval_version": "0.1.0", "task": TASK, "split": "test", "doc_id": doc_id,
            "method": method, "family": "qwen2_5_vl", "target": "org/T", "draft": None if method == "ar" else "org/D",
            "params": {}, "dtype": "bfloat16", "device": "cuda:0", "rank": 0, "world_size": 1,
            "paired_baseline": False}
    if "error" not in fields:
        base.update({"new_tokens": 1, "rounds": 0, "tau": None, "tau_excl": None, "proposed": 0, "accepted_exact": 0,
                     "accepted_loose": 0, "accepted_shift": 0, "acceptance_rate": None, "accepted_per_position": [],
                     "num_draft_tokens": 0, "prefill_s": 0.0, "decode_s": 0.0, "total_s": 0.0, "stop_reason": "eos",
                     "tokens": [], "provenance": "", "anchor_flags": "", "text": "", "max_new_tokens": 32,
                     "prompt_tokens": 100})
    base.update(fields)
    return base


def ar_record(doc_id, tokens, text, prefill, decode):
    n = len(tokens)
    return record("ar", doc_id, new_tokens=n, rounds=n - 1, tau=1.0, tau_excl=0.0, tokens=tokens, text=text,
                  prefill_s=prefill, decode_s=decode, total_s=prefill + decode, provenance="P" + "T" * (n - 1))


def spec_record(method, doc_id, params, tokens, text, rounds, counts, per_position, prefill, decode, **extra):
    exact, loose, shift = counts
    proposed = extra.pop("proposed")
    accepted = exact + loose + shift
    return record(method, doc_id, params=params, new_tokens=len(tokens), rounds=rounds,
                  tau=(len(tokens) - 1) / rounds, tau_excl=accepted / rounds, proposed=proposed,
                  accepted_exact=exact, accepted_loose=loose, accepted_shift=shift,
                  acceptance_rate=accepted / proposed, accepted_per_position=per_position,
                  num_draft_tokens=params["num_draft_tokens"], tokens=tokens, text=text,
                  prefill_s=prefill, decode_s=decode, total_s=prefill + decode, **extra)


def paired(ar_decode, ar_total, exact_match, edit_sim, ar_tokens=(1,), ar_text="a"):
    return dict(paired_baseline=True, ar_text=ar_text, ar_tokens=list(ar_tokens), ar_new_tokens=len(ar_tokens),
                ar_prefill_s=ar_total - ar_decode, ar_decode_s=ar_decode, ar_total_s=ar_total,
                speedup_decode=None, speedup_e2e=None, exact_match_ar=exact_match, edit_sim_ar=edit_sim)


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_lmms_run(folder: Path, stamp: str, model_args: str, accs: dict, aggregate: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        "results": {TASK: {"alias": TASK, "acc,none": aggregate, "acc_stderr,none": 0.1, "bleu,none": 0.3}},
        "configs": {TASK: {"task": TASK, "test_split": "test"}},
        "higher_is_better": {TASK: {"acc": True, "bleu": True}},
        "config": {"model": "lvspec_qwen", "model_args": model_args},
        "lmms_eval_version": "0.7.3",
    }
    (folder / f"{stamp}_results.json").write_text(json.dumps(results))
    write_jsonl(folder / f"{stamp}_samples_{TASK}.jsonl",
                [{"doc_id": d, "target": "t", "filtered_resps": ["x"], "acc": a, "bleu": 0.1} for d, a in accs.items()])


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_jsonl(root / "ar.jsonl", [
        ar_record(0, [1, 2, 3, 4, 5], "a b c d e", 0.5, 4.0),
        ar_record(1, [1, 2, 3], "a b c", 0.5, 2.0),
        ar_record(2, [7, 8, 9, 10], "x", 1.0, 3.0),
    ])
    sd = {"num_draft_tokens": 2}
    write_jsonl(root / "sd.jsonl", [
        spec_record("sd", 0, sd, [1, 2, 3, 4, 5], "a b c d e", 2, (2, 0, 0), [2, 0], 0.5, 2.0, proposed=4),
        spec_record("sd", 1, sd, [1, 2, 4], "a b x", 1, (1, 0, 0), [1, 0], 0.5, 1.0, proposed=2),
        record("sd", 2, params=sd, error="RuntimeError: boom"),
    ])
    p = LVSPEC_PARAMS
    write_jsonl(root / "lvspec.jsonl", [
        spec_record("lvspec", 0, p, list(range(9)), "l0", 2, (4, 2, 0), [2, 2, 1, 1], 0.5, 1.0, proposed=8,
                    **paired(4.0, 4.5, False, 0.8, ar_tokens=[1, 2, 3, 4, 5])),
        spec_record("lvspec", 1, p, list(range(7)), "l1", 2, (3, 0, 1), [2, 1, 1, 0], 0.5, 0.5, proposed=8,
                    **paired(2.0, 2.5, True, 1.0, ar_tokens=[1, 2, 3])),
        spec_record("lvspec", 2, p, list(range(3)), "l2", 1, (1, 0, 0), [1, 0, 0, 0], 1.0, 1.0, proposed=4,
                    **paired(3.0, 4.0, True, 1.0, ar_tokens=[7, 8, 9, 10])),
    ])
    write_lmms_run(root / "lmms_ar" / "org__T", "20260101_000000", "pretrained=org/T,method=ar,stats_path=ar.jsonl",
                   {0: 1.0, 1: True, 2: 0.5}, 2.5 / 3)
    write_lmms_run(root / "lmms_lvspec" / "org__T", "20260101_000100",
                   "pretrained=org/T,draft_pretrained=org/D,method=lvspec,num_draft_tokens=4,paired_baseline=true",
                   {0: 1.0, 1: 0.5, 2: 0.5}, 2 / 3)
    return root


def summary_of(*paths, **kwargs):
    inputs = load_inputs(paths)
    return summarize(build_groups(inputs), **kwargs), inputs


def rows_by_method(summary):
    return {r["method"]: r for r in summary.rows}


def cli(*args, cwd=None):
    """`python -m lvspec_eval.report.cli ARGS` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "lvspec_eval.report.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


# -- numbers ------------------------------------------------------------------------------------

def test_ar_row_is_its_own_baseline(runs):
    summary, inputs = summary_of(runs)
    assert inputs.warnings == []
    ar = rows_by_method(summary)["ar"]
    assert (ar["samples"], ar["failed"]) == (3, 0)
    assert ar["tau_mean"] == ar["tau_median"] == ar["tau_pooled"] == 1.0
    assert ar["tau_excl_mean"] == ar["tau_excl_pooled"] == 0.0
    assert ar["acceptance_rate_pooled"] is None  # nothing proposed
    assert ar["speedup_decode_pooled"] == ar["speedup_e2e_pooled"] == ar["speedup_decode_median"] == 1.0
    assert ar["token_rate_speedup_pooled"] == ar["token_rate_speedup_median"] == 1.0
    assert ar["new_tokens_mean"] == ar["ar_new_tokens_mean"] == 4.0  # (5 + 3 + 4) / 3
    assert ar["exact_match_ar_mean"] == ar["edit_sim_ar_mean"] == 1.0
    assert ar["metric"] == "acc" and ar["score"] == pytest.approx(2.5 / 3, abs=1e-15)
    assert ar["retention"] == 1.0 and ar["retention_ci"] == [1.0, 1.0] and ar["retention_pairs"] == 3


def test_sd_row_paired_with_ar_run(runs):
    sd = rows_by_method(summary_of(runs)[0])["sd"]
    assert (sd["samples"], sd["failed"]) == (3, 1)
    assert sd["settings_label"] == "K=2"
    assert sd["tau_mean"] == sd["tau_median"] == 2.0 and sd["tau_excl_mean"] == 1.0
    assert sd["tau_pooled"] == 2.0 and sd["tau_excl_pooled"] == 1.0  # (4 + 2) / (2 + 1), (2 + 1) / (2 + 1)
    assert sd["acceptance_rate_pooled"] == 0.5 and sd["acceptance_exact"] == 0.5  # (2 + 1) / (4 + 2)
    assert sd["acceptance_loose"] == sd["acceptance_shift"] == 0.0
    assert sd["speedup_source"] == "ar run" and sd["speedup_pairs"] == 2
    # decode: (4.0 + 2.0) / (2.0 + 1.0); every per-sample ratio is 2, so is every resample
    assert sd["speedup_decode_pooled"] == 2.0 and sd["speedup_decode_median"] == 2.0
    assert sd["speedup_decode_pooled_ci"] == [2.0, 2.0]
    # e2e: (4.5 + 2.5) / (2.5 + 1.5) = 1.75; median of 4.5/2.5 and 2.5/1.5
    assert sd["speedup_e2e_pooled"] == 1.75
    assert sd["speedup_e2e_median"] == (4.5 / 2.5 + 2.5 / 1.5) / 2
    # token rate: ((4 + 2) / 3.0) / ((4 + 2) / 6.0) = 2, per sample (4/2)/(4/4) and (2/1)/(2/2)
    assert sd["token_rate_speedup_pooled"] == 2.0 and sd["token_rate_speedup_median"] == 2.0
    assert sd["new_tokens_mean"] == sd["ar_new_tokens_mean"] == 4.0  # (5 + 3) / 2 both
    assert sd["exact_match_ar_mean"] == 0.5
    assert sd["edit_sim_ar_mean"] == pytest.approx((1.0 + 2 / 3) / 2, abs=1e-15)
    assert sd["score"] is None and sd["retention"] is None


def test_lvspec_row_paired_baseline_and_retention(runs):
    summary, _ = summary_of(runs)
    lv = rows_by_method(summary)["lvspec"]
    assert lv["settings_label"] == "K=4"
    assert lv["tau_mean"] == 3.0 and lv["tau_median"] == 3.0 and lv["tau_excl_mean"] == 2.0
    assert lv["tau_pooled"] == 16 / 5 and lv["tau_excl_pooled"] == 11 / 5  # tau_mean 3.0 is another statistic
    assert lv["acceptance_rate_pooled"] == 11 / 20
    assert (lv["acceptance_exact"], lv["acceptance_loose"], lv["acceptance_shift"]) == (8 / 20, 2 / 20, 1 / 20)
    # paired_baseline timings win over the separate ar run (whose decode times are the same here,
    # but whose totals differ from the paired ar_total_s: 4.5 / 2.5 / 4.0 both ways, so check the source)
    assert lv["speedup_source"] == "paired_baseline" and lv["speedup_pairs"] == 3
    assert lv["speedup_decode_pooled"] == 9.0 / 2.5  # (4 + 2 + 3) / (1 + 0.5 + 1)
    assert lv["speedup_decode_median"] == 4.0  # median of 4, 4, 3
    assert lv["speedup_e2e_pooled"] == 11.0 / 4.5  # (4.5 + 2.5 + 4) / (1.5 + 1 + 2)
    assert lv["speedup_e2e_median"] == 2.5  # median of 3, 2.5, 2
    assert lv["token_rate_speedup_pooled"] == pytest.approx(6.4, abs=1e-12)  # (16 / 2.5) / (9 / 9)
    assert lv["token_rate_speedup_median"] == 8.0  # median of 8, 12, 2
    assert lv["new_tokens_mean"] == pytest.approx(19 / 3, abs=1e-15) and lv["ar_new_tokens_mean"] == 4.0
    assert lv["exact_match_ar_mean"] == pytest.approx(2 / 3, abs=1e-15)
    assert lv["edit_sim_ar_mean"] == pytest.approx(2.8 / 3, abs=1e-15)
    assert lv["score"] == pytest.approx(2 / 3, abs=1e-15) and lv["score_source"] == "samples"
    assert lv["ar_score"] == pytest.approx(2.5 / 3, abs=1e-15)
    assert lv["retention"] == 0.8 and lv["retention_pairs"] == 3  # (1 + .5 + .5) / (1 + 1 + .5)
    assert lv["lmms_eval_version"] == "0.7.3"
    assert lv["lvspec_eval_versions"] == ["0.1.0"] and lv["devices"] == ["cuda:0"] and lv["world_size"] == 1


def test_bootstrap_is_seeded_percentile_over_samples(runs):
    lv = rows_by_method(summary_of(runs, resamples=1000, seed=0)[0])["lvspec"]
    idx = np.random.default_rng(0).integers(0, 3, size=(1000, 3))
    mine, theirs = np.array([1.0, 0.5, 0.5]), np.array([1.0, 1.0, 0.5])
    expected = np.percentile(mine[idx].sum(1) / theirs[idx].sum(1), [2.5, 97.5]).tolist()
    assert lv["retention_ci"] == expected
    ar_dec, dec = np.array([4.0, 2.0, 3.0]), np.array([1.0, 0.5, 1.0])
    assert lv["speedup_decode_pooled_ci"] == np.percentile(ar_dec[idx].sum(1) / dec[idx].sum(1), [2.5, 97.5]).tolist()
    lo, hi = lv["speedup_decode_pooled_ci"]
    assert 3.0 <= lo <= lv["speedup_decode_pooled"] <= hi <= 4.0
    n, ar_n = np.array([8.0, 6.0, 2.0]), np.array([4.0, 2.0, 3.0])  # decode-loop tokens, same indices
    rate = (n[idx].sum(1) / dec[idx].sum(1)) / (ar_n[idx].sum(1) / ar_dec[idx].sum(1))
    assert lv["token_rate_speedup_pooled_ci"] == np.percentile(rate, [2.5, 97.5]).tolist()
    values, ones = list(range(1, 21)), [1.0] * 20
    assert bootstrap_ratio(values, ones, 1000, 0) == bootstrap_ratio(values, ones, 1000, 0)
    assert bootstrap_ratio(values, ones, 1000, 0) != bootstrap_ratio(values, ones, 1000, 1)
    none = rows_by_method(summary_of(runs, resamples=0)[0])["lvspec"]
    assert none["speedup_decode_pooled_ci"] is None and none["retention_ci"] is None
    assert bootstrap_ratio([], [], 1000, 0) is None


SPECVLM_PARAMS = {k: v for k, v in LVSPEC_PARAMS.items()
                  if k in ("num_draft_tokens", "draft_schedule", "short_answer_tokens") or k.startswith("draft_video")}


def test_tau_ratio_pairs_a_loose_row_with_the_lossless_run_of_the_same_drafter_input(runs, tmp_path):
    """lvspec (pruned drafter, K=4) pairs with specvlm of the same K and pruning, never with sd (K=2, full video):
    specvlm docs 0 and 2 only, taus 8/4 = 2 and 2/1 = 2; lvspec's taus there 4 and 2 -> (4 + 2) / (2 + 2) = 1.5."""
    lv = rows_by_method(summary_of(runs)[0])["lvspec"]
    assert (lv["counterpart"], lv["tau_ratio"], lv["tau_ratio_pairs"]) == ("specvlm", None, 0)
    assert lv["counterpart_settings"] == SPECVLM_PARAMS
    assert any("no tau_ratio: no specvlm run with the same drafter input" in n for n in lv["notes"])
    assert rows_by_method(summary_of(runs)[0])["sd"]["counterpart"] is None  # lossless: its own reference
    write_jsonl(runs / "specvlm.jsonl", [
        spec_record("specvlm", 0, SPECVLM_PARAMS, [1, 2, 3, 4, 5], "a b c d e", 2, (2, 0, 0), [1, 1, 0, 0], 0.5, 2.0,
                    proposed=8),
        spec_record("specvlm", 2, SPECVLM_PARAMS, [7, 8, 9], "x", 1, (1, 0, 0), [1, 0, 0, 0], 1.0, 1.0, proposed=4),
    ])
    write_jsonl(tmp_path / "other_k.jsonl", [  # another K: not the counterpart
        spec_record("specvlm", d, dict(SPECVLM_PARAMS, num_draft_tokens=2), [1, 2, 3], "a", 2, (0, 0, 0), [0, 0],
                    0.5, 1.0, proposed=4) for d in (0, 1, 2)])
    summary, _ = summary_of(runs, tmp_path / "other_k.jsonl", resamples=1000, seed=0)
    lv = rows_by_method(summary)["lvspec"]
    assert (lv["counterpart"], lv["tau_ratio"], lv["tau_ratio_pairs"]) == ("specvlm", 1.5, 2)
    idx = np.random.default_rng(0).integers(0, 2, size=(1000, 2))
    mine, theirs = np.array([4.0, 2.0]), np.array([2.0, 2.0])
    assert lv["tau_ratio_ci"] == np.percentile(mine[idx].sum(1) / theirs[idx].sum(1), [2.5, 97.5]).tolist()
    assert "1.50x [" in render(summary, "table") and "(specvlm)" in render(summary, "table")


def test_retention_without_ar_scores_is_none_with_a_note(runs, tmp_path):
    summary, _ = summary_of(runs / "lvspec.jsonl", runs / "lmms_lvspec")
    lv = summary.rows[0]
    assert lv["score"] == pytest.approx(2 / 3, abs=1e-15)
    assert lv["retention"] is None and lv["retention_ci"] is None
    assert lv["speedup_decode_pooled"] == 9.0 / 2.5  # timings still come from paired_baseline
    assert any("paired ar timings" in n and "no ar task score" in n for n in summary.notes)


def test_aggregate_score_when_samples_are_not_numeric(runs):
    for folder in ("lmms_ar", "lmms_lvspec"):
        samples = next((runs / folder).rglob("*_samples_*.jsonl"))
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        write_jsonl(samples, [dict(r, acc={"pred": "x"}) for r in rows])
    summary, inputs = summary_of(runs)
    lv = rows_by_method(summary)["lvspec"]
    assert lv["score_source"] == "results" and lv["score"] == 2 / 3
    assert lv["retention"] == (2 / 3) / (2.5 / 3) and lv["retention_ci"] is None
    assert any("not a number" in w for w in inputs.warnings)


def test_metric_option_picks_another_metric(runs):
    inputs = load_inputs([runs], metric="bleu")
    lv = rows_by_method(summarize(build_groups(inputs)))["lvspec"]
    assert lv["metric"] == "bleu" and lv["score"] == pytest.approx(0.1, abs=1e-15)
    assert lv["retention"] == pytest.approx(1.0, abs=1e-15)


def test_group_split_and_dtype_keep_rows_apart(runs, tmp_path):
    extra = write_jsonl(tmp_path / "fp32.jsonl", [ar_record(0, [1, 2], "a", 0.1, 1.0) | {"dtype": "float32"}])
    summary, _ = summary_of(runs, extra)
    ars = [r for r in summary.rows if r["method"] == "ar"]
    assert [(r["dtype"], r["samples"]) for r in ars] == [("bfloat16", 3), ("float32", 1)]
    assert ars[1]["settings_label"] == "float32" and ars[1]["score"] is None


# -- formats ------------------------------------------------------------------------------------

def test_render_formats(runs):
    summary, _ = summary_of(runs)
    table = render(summary, "table")
    assert "3.60x" in table and "80.0" in table and "notes:" in table
    markdown = render(summary, "markdown")
    assert markdown.splitlines()[1].startswith("|--")
    latex = render(summary, "latex")
    assert "\\toprule" in latex and "fly" not in latex and "\\%" in latex
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(render(summary, "csv"))))
    lv = next(r for r in rows if r["method"] == "lvspec")
    assert float(lv["speedup_decode_pooled"]) == 9.0 / 2.5 and float(lv["retention"]) == 0.8
    assert json.loads(lv["settings"]) == LVSPEC_PARAMS and lv["retention_ci_lo"]
    doc = json.loads(render(summary, "json"))
    assert doc["schema"] == "lvspec-summary" and doc["schema_version"] == 2
    assert doc["accounting"]["tau_pooled"].startswith("sum(new_tokens - 1) / sum(rounds)")
    assert doc["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95, "interval": "percentile",
                                "unit": "sample"}
    assert [r["method"] for r in doc["rows"]] == ["ar", "sd", "lvspec"]


# -- CLI ----------------------------------------------------------------------------------------

def test_cli_summary_formats_and_output_file(runs, tmp_path):
    proc = cli("summary", runs)
    assert proc.returncode == 0, proc.stderr
    assert "lvspec" in proc.stdout and "3.60x" in proc.stdout
    out = tmp_path / "s" / "summary.json"
    proc = cli("summary", runs, "--format", "json", "--output", out, "--seed", "3", "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["bootstrap"]["seed"] == 3 and doc["bootstrap"]["resamples"] == 50
    for fmt in ("markdown", "csv", "latex"):
        proc = cli("summary", runs, "--format", fmt)
        assert proc.returncode == 0 and proc.stdout, (fmt, proc.stderr)


def test_console_script_is_installed(runs):
    script = Path(sys.executable).parent / "lvspec-report"
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    proc = subprocess.run([str(script), "summary", runs, "--format", "csv"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("task,split,method"), proc.stderr


def test_no_torch_import(runs, tmp_path):
    baseline = tmp_path / "base.json"
    code = f"""
import sys
from lvspec_eval.report.cli import main
runs = {str(runs)!r}
assert main(["summary", runs, "--format", "json", "--output", {str(baseline)!r}]) == 0
assert main(["leaderboard", runs, "--output", {str(tmp_path / 'lb.json')!r}]) == 0
assert main(["check", "--baseline", {str(baseline)!r}, runs, "--max-tau-drop", "5%"]) == 0
assert main(["plots", runs, "--outdir", {str(tmp_path / 'plots')!r}]) == 0
assert main(["html", runs, "-o", {str(tmp_path / 'r.html')!r}]) == 0
heavy = sorted(m for m in ("torch", "transformers", "lmms_eval", "accelerate") if m in sys.modules)
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_cli_plots(runs, tmp_path):
    proc = cli("plots", runs, "--outdir", tmp_path / "plots")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    stems = ["acceptance_by_position_cap", "pareto_cap_org-T_bfloat16", "tau_hist_cap", "tau_vs_length_cap"]
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))
    assert (tmp_path / "plots" / "tau_hist_cap.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "plots" / "pareto_cap_org-T_bfloat16.svg").read_text()
    assert "x axis is edit_sim_ar_mean" in proc.stderr  # sd has a speedup but no retention


def test_acceptance_by_position(runs):
    from lvspec_eval.report.plots import acceptance_by_position, pareto_front

    summary, _ = summary_of(runs)
    lv = next(g for g in summary.groups if g.key.method == "lvspec")
    # [2+2+1, 2+1+0, 1+1+0, 1+0+0] over 2 + 2 + 1 rounds
    assert acceptance_by_position(lv).tolist() == [1.0, 0.6, 0.4, 0.2]
    assert pareto_front([(1.0, 1.0), (0.8, 3.6), (0.9, 2.0), (0.7, 3.0)]) == [(0.8, 3.6), (0.9, 2.0), (1.0, 1.0)]


def test_cli_leaderboard(runs, tmp_path):
    out = tmp_path / "lb.json"
    proc = cli("leaderboard", runs, "--output", out, "--device-name", "NVIDIA H100", "--git-revision", "abc123")
    assert proc.returncode == 0, proc.stderr
    board = json.loads(out.read_text())
    assert board["schema"] == "lvspec-leaderboard" and board["schema_version"] == 2
    assert board["git_revision"] == "abc123"
    assert board["report_environment"]["lvspec-eval"] == "0.1.0"
    lv = next(e for e in board["entries"] if e["method"] == "lvspec")
    assert lv["models"] == {"target": "org/T", "draft": "org/D", "family": "qwen2_5_vl"}
    assert lv["settings"] == {"params": LVSPEC_PARAMS, "dtype": "bfloat16", "max_new_tokens": 32}
    assert lv["hardware"] == {"device": "cuda:0", "device_name": "NVIDIA H100", "count": 1}
    assert lv["software"] == {"lvspec_eval": "0.1.0", "lmms_eval": "0.7.3"}
    assert lv["metrics"]["speedup_decode_pooled"] == 9.0 / 2.5 and lv["metrics"]["retention"] == 0.8
    assert lv["metrics"]["token_rate_speedup_pooled"] == pytest.approx(6.4, abs=1e-12)
    assert (lv["metrics"]["new_tokens_mean"], lv["metrics"]["ar_new_tokens_mean"]) == pytest.approx((19 / 3, 4.0))
    assert [(e["task"], e["method"]) for e in board["entries"]] == [(TASK, "ar"), (TASK, "sd"), (TASK, "lvspec")]


# -- check --------------------------------------------------------------------------------------

@pytest.fixture
def baseline(runs, tmp_path) -> Path:
    path = tmp_path / "baseline.json"
    assert cli("summary", runs, "--format", "json", "--output", path).returncode == 0
    return path


def edit_baseline(path: Path, method: str, **changes) -> None:
    doc = json.loads(path.read_text())
    for row in doc["rows"]:
        if row["method"] == method:
            row.update(changes)
    path.write_text(json.dumps(doc))


def test_check_passes_against_itself(runs, baseline):
    proc = cli("check", "--baseline", baseline, runs, "--max-tau-drop", "5%", "--max-speedup-drop", "10%")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed: 6 checks" in proc.stdout


def test_check_reports_regressions(runs, baseline):
    edit_baseline(baseline, "lvspec", speedup_decode_pooled=4.0, tau_mean=3.3)
    proc = cli("check", "--baseline", baseline, runs, "--max-tau-drop", "5%", "--max-speedup-drop", "0.05")
    assert proc.returncode == 1, proc.stderr
    bad = [line for line in proc.stdout.splitlines() if "REGRESSED" in line]
    assert len(bad) == 2 and all("lvspec" in line for line in bad)
    assert any("speedup_decode" in line and "-10.0%" in line for line in bad)  # 3.6 vs 4.0
    assert any("tau_mean" in line and "-9.1%" in line for line in bad)  # 3.0 vs 3.3
    assert "FAILED: 2 of 6 checks" in proc.stdout
    # a 10% limit lets the speedup drop of exactly 10% through
    proc = cli("check", "--baseline", baseline, runs, "--max-speedup-drop", "10%")
    assert proc.returncode == 0, proc.stdout


def test_check_min_retention_and_unknown(runs, baseline):
    proc = cli("check", "--baseline", baseline, runs, "--min-retention", "0.99", "--format", "json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    status = {f["method"]: f["status"] for f in result["findings"]}
    assert status == {"ar": "ok", "sd": "unknown", "lvspec": "REGRESSED"}
    proc = cli("check", "--baseline", baseline, runs, "--min-retention", "75%")
    assert proc.returncode == 1 and "unknown" in proc.stdout  # sd has no task score


def test_check_max_drop_on_any_field(runs, baseline):
    edit_baseline(baseline, "sd", exact_match_ar_mean=1.0)  # current: doc 0 equal, doc 1 not -> 0.5
    proc = cli("check", "--baseline", baseline, runs, "--max-drop", "exact_match_ar_mean=0",
               "--max-drop", "edit_sim_ar_mean=10%")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bad = [line for line in proc.stdout.splitlines() if "REGRESSED" in line]
    assert len(bad) == 1 and " sd " in bad[0] and "exact_match_ar_mean" in bad[0] and "-50.0%" in bad[0]
    assert "FAILED: 1 of 6 checks" in proc.stdout
    proc = cli("check", "--baseline", baseline, runs, "--max-drop", "tau=5%")
    assert proc.returncode == 2 and "FIELD one of" in proc.stderr and "tau_mean" in proc.stderr
    proc = cli("check", "--baseline", baseline, runs, "--max-drop", "exact_match_ar=0")
    assert proc.returncode == 2 and "exact_match_ar is now exact_match_ar_mean" in proc.stderr


def test_check_reads_a_schema_1_baseline(runs, baseline):
    """A baseline written before run-level names carried their aggregation (schema_version 1) is read
    with its fields renamed: speedup_decode -> speedup_decode_pooled, exact_match_ar -> exact_match_ar_mean."""
    from lvspec_eval.report.summary import V1_NAMES

    doc = json.loads(baseline.read_text())
    doc["schema_version"] = 1
    doc["rows"] = [{old: row[new] for old, new in V1_NAMES.items()} | {k: v for k, v in row.items()
                                                                    if k not in V1_NAMES.values()} for row in doc["rows"]]
    for row in doc["rows"]:
        if row["method"] == "lvspec":
            row["speedup_decode"] = 4.0  # the current 3.6 is a 10% drop
    assert not any("speedup_decode_pooled" in row or "exact_match_ar_mean" in row for row in doc["rows"])
    baseline.write_text(json.dumps(doc))
    proc = cli("check", "--baseline", baseline, runs, "--max-speedup-drop", "5%", "--max-drop", "exact_match_ar_mean=0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bad = [line.split() for line in proc.stdout.splitlines() if "REGRESSED" in line]
    assert [(cells[1], cells[4]) for cells in bad] == [("lvspec", "speedup_decode_pooled")], proc.stdout
    assert "FAILED: 1 of 6 checks" in proc.stdout


def test_check_missing_and_new_rows(runs, baseline, tmp_path):
    proc = cli("check", "--baseline", baseline, runs / "ar.jsonl", runs / "lvspec.jsonl", "--max-tau-drop", "5%")
    assert proc.returncode == 1 and "missing" in proc.stdout
    proc = cli("check", "--baseline", baseline, runs / "ar.jsonl", runs / "lvspec.jsonl", "--max-tau-drop", "5%",
               "--allow-missing")
    assert proc.returncode == 0, proc.stdout
    extra = write_jsonl(tmp_path / "fly.jsonl", [spec_record("fly", 0, {"num_draft_tokens": 4, "fly_window": 6,
                                                                       "fly_entropy": 0.3}, [1, 2, 3], "f", 1,
                                                        (1, 1, 0), [1, 1, 0, 0], 0.1, 0.5, proposed=4)])
    proc = cli("check", "--baseline", baseline, runs, extra, "--max-tau-drop", "5%")
    assert proc.returncode == 0 and " new" in proc.stdout


def test_check_accepts_a_leaderboard_baseline(runs, tmp_path):
    board = tmp_path / "lb.json"
    assert cli("leaderboard", runs, "--output", board).returncode == 0
    rows = load_baseline(board)
    summary, _ = summary_of(runs)
    findings = compare(rows, summary.rows, Thresholds(max_tau_drop=0.05, max_speedup_drop=0.1))
    assert len(findings) == 6 and not failures(findings)


def test_check_needs_a_threshold_and_a_valid_baseline(runs, baseline, tmp_path):
    proc = cli("check", "--baseline", baseline, runs)
    assert proc.returncode == 2 and "at least one of" in proc.stderr
    proc = cli("check", "--baseline", baseline, runs, "--max-tau-drop", "5")
    assert proc.returncode == 2 and "ambiguous" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    proc = cli("check", "--baseline", bad, runs, "--max-tau-drop", "5%")
    assert proc.returncode == 2 and "not a baseline" in proc.stderr
    proc = cli("check", "--baseline", tmp_path / "nope.json", runs, "--max-tau-drop", "5%")
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_parse_fraction():
    assert parse_fraction("5%") == 0.05 and parse_fraction("0.05") == 0.05 and parse_fraction("150%") == 1.5
    for bad in ("5", "abc", "-1%"):
        with pytest.raises(ValueError):
            parse_fraction(bad)


# -- malformed inputs ---------------------------------------------------------------------------

def test_truncated_last_line_is_a_warning(runs):
    path = runs / "sd.jsonl"
    path.write_text(path.read_text() + '{"record_version": 1, "task": "ca')
    proc = cli("summary", runs, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert f"{path}:4: last line is truncated" in proc.stderr
    assert next(r for r in json.loads(proc.stdout)["rows"] if r["method"] == "sd")["samples"] == 3
    proc = cli("summary", runs, "--strict")
    assert proc.returncode == 2 and "--strict" in proc.stderr


def test_truncated_line_in_the_middle_is_an_error(runs):
    path = runs / "sd.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    proc = cli("summary", runs)
    assert proc.returncode == 2
    assert f"{path}:2: not a JSON line" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_fields_are_named(runs):
    path = runs / "lvspec.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["decode_s"], rows[1]["ar_total_s"]
    write_jsonl(path, rows)
    proc = cli("summary", runs)
    assert proc.returncode == 2
    assert f"{path}:2: a successful record lacks field(s) decode_s, ar_total_s" in proc.stderr


def test_wrong_types_are_named(runs):
    path = runs / "ar.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["decode_s"] = "3.0"
    write_jsonl(path, rows)
    proc = cli("summary", runs)
    assert proc.returncode == 2 and f"{path}:3: field decode_s is '3.0', expected a number" in proc.stderr


def test_unsupported_record_version(runs):
    path = runs / "ar.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1].update(record_version=2, lvspec_eval_version="0.2.0")
    write_jsonl(path, rows)
    proc = cli("summary", runs)
    assert proc.returncode == 2
    assert f"{path}:2: record_version 2 (written by lvspec-eval 0.2.0) is not supported" in proc.stderr


def test_mixed_lvspec_eval_versions_are_noted(runs):
    path = runs / "ar.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["lvspec_eval_version"] = "0.2.0"
    write_jsonl(path, rows)
    summary, _ = summary_of(runs)
    assert rows_by_method(summary)["ar"]["lvspec_eval_versions"] == ["0.1.0", "0.2.0"]
    assert any("versions 0.1.0, 0.2.0 are mixed" in n for n in summary.notes)


def test_duplicate_samples_warn_and_the_later_wins(runs, tmp_path):
    again = write_jsonl(tmp_path / "ar_again.jsonl", [ar_record(2, [7, 8], "x", 1.0, 5.0)])
    summary, inputs = summary_of(runs, again)
    assert any("duplicate sample doc_id 2" in w for w in inputs.warnings)
    assert rows_by_method(summary)["ar"]["samples"] == 3


def test_input_errors(runs, tmp_path):
    cases = []
    cases.append(((tmp_path / "nope",), "no such file or folder"))
    (tmp_path / "notes.txt").write_text("hello")
    cases.append(((tmp_path / "notes.txt",), "not an input of lvspec-report"))
    (tmp_path / "empty").mkdir()
    cases.append(((tmp_path / "empty",), "no .jsonl or .json files"))
    cases.append(((runs / "lmms_lvspec",), "no lvspec records among the inputs"))
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / f"20260101_000000_samples_{TASK}.jsonl").write_text('{"doc_id": 0, "acc": 1}\n')
    cases.append(((runs / "ar.jsonl", orphan), "without its results file 20260101_000000_results.json"))
    broken = tmp_path / "broken" / "20260101_000000_results.json"
    broken.parent.mkdir()
    broken.write_text("{")
    cases.append(((runs / "ar.jsonl", broken), "not a JSON file"))
    not_a_record = write_jsonl(tmp_path / "list.jsonl", [[1, 2, 3]])
    cases.append(((not_a_record,), "not an input of lvspec-report"))
    for paths, message in cases:
        proc = cli("summary", *paths)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (paths, proc.stderr)
    with pytest.raises(ReportInputError, match="unknown method 'turbo'"):
        load_inputs([write_jsonl(tmp_path / "turbo.jsonl", [record("turbo", 0, params={}, error="x")])])


def test_other_models_in_lmms_outputs_are_skipped_with_a_warning(runs):
    results = next((runs / "lmms_ar").rglob("*_results.json"))
    doc = json.loads(results.read_text())
    doc["config"]["model"] = "qwen2_5_vl"
    results.write_text(json.dumps(doc))
    proc = cli("summary", runs, "--format", "json")
    assert proc.returncode == 0 and "is not an lvspec backend" in proc.stderr
    assert next(r for r in json.loads(proc.stdout)["rows"] if r["method"] == "lvspec")["retention"] is None


def test_bad_model_args_in_results_are_an_error(runs):
    results = next((runs / "lmms_ar").rglob("*_results.json"))
    doc = json.loads(results.read_text())
    doc["config"]["model_args"] = "pretrained=org/T,method=warp"
    results.write_text(json.dumps(doc))
    proc = cli("summary", runs)
    assert proc.returncode == 2 and "model_args are not valid lvspec model args" in proc.stderr
