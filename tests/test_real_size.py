"""benchmarks/real_size.py on the CPU with its tiny preset (real architecture classes, tiny widths):
every measured item is in the tables, times are positive, memory shares add up, and the scripted
acceptance reaches its tau exactly. Never asserts on speed."""

import json
import subprocess
import sys
from fractions import Fraction

import pytest

from testbed.fixtures.scripted import acceptance_schedule, scripted_new_tokens
from testbed.paths import REPO

METHODS = ("ar", "lvspec")  # sd, specvlm, random: the same scripted path (benchmarks run them all)
MEMORY_PARTS = ("target_weights", "draft_weights", "target_kv", "draft_kv", "other")


@pytest.mark.parametrize("tau,k", [("3.28", 10), ("7.76", 10), ("7.42", 10), ("3.5", 10), ("8", 10), ("0", 4), ("4", 4)])
def test_acceptance_schedule_has_the_exact_mean(tau, k):
    schedule = acceptance_schedule(tau, k)
    assert Fraction(sum(schedule), len(schedule)) == Fraction(tau)
    assert all(0 <= n <= k for n in schedule) and max(schedule) - min(schedule) <= 1
    n = scripted_new_tokens(schedule, 256)
    assert (n - 1) % (len(schedule) + sum(schedule)) == 0  # whole cycles


def test_acceptance_schedule_refuses_tau_above_k():
    with pytest.raises(ValueError, match="K=4"):
        acceptance_schedule("4.5", 4)


def test_llava_subset_depth_follows_the_device_memory():
    from benchmarks.real_size import auto_llava_layers

    small, large = auto_llava_layers(139 * 2**30), auto_llava_layers(400 * 2**30)
    assert large == 80  # the whole 72B target fits beside its drafter
    assert 2 <= small < 80 and small % 2 == 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_size") / "real_size_cpu.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.real_size", "--tiny", "--methods", ",".join(METHODS),
                           "--out", str(out), "--cache", str(out.parent / "cache")],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.with_suffix(".json").read_text()), out.read_text(), proc.stdout


def test_every_pair_and_measured_item_is_reported(report):
    data, text, stdout = report
    assert [r["pair"] for r in data["pairs"]] == ["qwen", "llava_ov"] and not data["skipped"]
    for title in ("Models", "Input", "Forward costs", "Speed at the paper's acceptance", "Peak memory per method"):
        assert f"## {title}" in text and title in stdout
    for r in data["pairs"]:
        assert r["video"]["frames"] == 8 and 0 < r["video"]["video_tokens"] < r["video"]["prompt_tokens"]
        for role in ("target", "drafter"):
            m = r["models"][role]
            # float32 parameters, plus a few small buffers (rotary frequencies)
            assert m["params_built"] > 0 and m["weight_bytes_built"] == pytest.approx(4 * m["params_built"], rel=1e-3)
        for model in ("target", "drafter"):
            c = r["costs"][model]
            assert c["prefill_s"] > 0 and c["step_s"] > 0 and c["verify_s"] > 0 and c["kv_bytes_prefill"] > 0
            assert c["context_tokens"] == r["video"]["prompt_tokens"]
        assert r["c"] == pytest.approx(r["costs"]["drafter"]["step_s"] / r["costs"]["target"]["step_s"])
        rows = {s["method"]: s for s in r["speed"]}
        assert set(rows) == set(METHODS) - {"ar"}
        for s in rows.values():
            assert s["speedup_decode"] > 0 and s["speedup_e2e"] > 0 and s["leviathan"] > 0 and s["cost_model"] > 0
            assert 0 <= s["overhead_share"] < 1 and 0 < s["a"] <= 1
            assert f"| {r['pair']} " in text and f"| {s['method']} " in text


def test_scripted_runs_reach_their_tau_exactly(report):
    data, _, _ = report
    for r in data["pairs"]:
        taus = data["config"]["scripted_tau"][r["pair"]]
        for method in set(METHODS) - {"ar"}:
            run = r["runs"][method]
            schedule = acceptance_schedule(taus[method], data["config"]["k"])
            cycles = (run["new_tokens"] - 1) // (len(schedule) + sum(schedule))
            assert run["rounds"] == cycles * len(schedule) and run["accepted"] == cycles * sum(schedule)
            assert Fraction(run["accepted"], run["rounds"]) == Fraction(taus[method])
            assert r["runs"][f"ar@{run['new_tokens']}"]["rounds"] == run["new_tokens"] - 1  # ar: one token a round
            assert next(s for s in r["speed"] if s["method"] == method)["tau_exact"] is True


def test_memory_shares_add_up_per_method(report):
    data, _, _ = report
    for r in data["pairs"]:
        assert set(r["memory"]) == set(METHODS)
        for method, m in r["memory"].items():
            assert m["unit"] == "resident set" and m["peak"] > m["baseline"] > 0
            assert all(m[k] >= 0 for k in MEMORY_PARTS)
            assert sum(m[k] for k in MEMORY_PARTS) == m["peak"]
            assert sum(m["shares"].values()) == pytest.approx(1.0)
            assert m["target_weights"] == r["models"]["target"]["weight_bytes_built"]
            # the caches hold at least prompt + new tokens - 1 positions (the last token is never fed)
            text = r["models"]["target"]
            per_token_built = text["kv_bytes_per_token_full"] * text["layers_built"] / text["layers_full"]
            assert m["target_kv"] >= per_token_built * (r["video"]["prompt_tokens"] + m["new_tokens"] - 1)
            if method == "ar":
                assert m["draft_weights"] == 0 and m["draft_kv"] == 0 and m["vs_ar"] == 0
            else:
                assert m["draft_weights"] == r["models"]["drafter"]["weight_bytes_built"] and m["draft_kv"] > 0


def test_subset_target_is_extrapolated_to_full_depth(report):
    data, text, _ = report
    llava = next(r for r in data["pairs"] if r["pair"] == "llava_ov")
    target = llava["models"]["target"]
    assert (target["layers_built"], target["layers_full"]) == (2, 4) and target["params_full"] > target["params_built"]
    fit, built, full = llava["costs"]["target_fit"], llava["costs"]["target"], llava["costs"]["target_full"]
    assert fit["layers"] == 1 and fit["kv_bytes_prefill"] * 2 == built["kv_bytes_prefill"]
    assert full["kv_bytes_prefill"] == 2 * built["kv_bytes_prefill"]
    for key in ("prefill_s", "step_s", "verify_s"):  # linear through the two measured depths
        assert full[key] == pytest.approx(built[key] + 2 * (built[key] - fit[key]))
    assert all("speedup_decode_full" in s for s in llava["speed"]) and "extrapolated" in text
