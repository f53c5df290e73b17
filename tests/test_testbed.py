"""The offline testbed: clip generator, answer grammar and scoring, task data, trained checkpoints."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from testbed import clips
from testbed import grammar as g

from testbed.paths import TESTBED_TASK_DIR as TASK_DIR
from testbed.paths import WEIGHTS
TRUTH = g.Attributes(count="two", colour="red", shape="circle", background="black", motion="moving")


# -- clips ----------------------------------------------------------------------------------------

def test_clip_generator_is_deterministic_and_seed_dependent():
    a, attrs_a = clips.render(123)
    b, attrs_b = clips.render(123)
    c, _ = clips.render(124)
    assert a.dtype == np.uint8 and a.shape == (clips.FRAMES, clips.SIZE, clips.SIZE, 3)
    assert np.array_equal(a, b) and attrs_a == attrs_b
    assert not np.array_equal(a, c)


def test_clip_shows_its_attributes():
    for seed in range(40):
        frames, attrs = clips.render(seed)
        bg = np.array(clips.BACKGROUND_RGB[attrs.background])
        corner = frames[0, 0, 0].astype(int)
        assert np.abs(corner - bg).max() <= 15, (seed, attrs)
        moved = np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0
        assert moved == (attrs.motion == "moving"), (seed, attrs)
        fg = np.abs(frames[0].astype(int) - np.array(clips.COLOUR_RGB[attrs.colour])).max(-1) <= 15
        rows = np.flatnonzero(fg.any(1))
        gaps = np.flatnonzero(np.diff(rows) > 1)  # separate lanes -> a gap in the occupied rows
        assert len(gaps) + 1 == (2 if attrs.count == "two" else 1), (seed, attrs)


def test_splits_are_disjoint():
    sets = {s: set(clips.split_seeds(s, 5000)) for s in clips.SPLIT_BASE}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    with pytest.raises(ValueError, match="unknown split"):
        clips.split_seeds("dev", 1)


def test_all_attribute_values_occur_in_the_test_split():
    seen = {a: set() for a in g.ATTRIBUTES}
    for seed in clips.split_seeds("test", 200):
        for a, v in clips.clip_attributes(seed).as_dict().items():
            seen[a].add(v)
    assert seen == {a: set(v) for a, v in g.ATTRIBUTES.items()}


# -- grammar and scoring ---------------------------------------------------------------------------

def test_caption_states_every_anchor_once_and_parses_back():
    rng = random.Random(0)
    for seed in range(50):
        attrs = clips.clip_attributes(seed)
        for style in ("target", "drafter"):
            text = g.caption(attrs, rng, style)
            assert g.parse_caption(text) == {a: {v} for a, v in attrs.as_dict().items()}, text
            assert g.score_caption(text, attrs)["anchor_f1"] == 1.0


def test_styles_prefer_different_paraphrases_in_five_slots():
    attrs = TRUTH
    target, drafter = g.modal_caption(attrs, "target"), g.modal_caption(attrs, "drafter")
    assert target != drafter
    differ = [s for s in g.FILLERS if g.TARGET_STYLE[s] != g.DRAFTER_STYLE[s]]
    assert differ == ["open", "duration", "camera", "rest", "look"]
    for style in (g.TARGET_STYLE, g.DRAFTER_STYLE):
        for probs in style.values():
            assert abs(sum(probs) - 1) < 1e-9 and max(probs) == 0.6


def test_fillers_hold_no_attribute_words():
    for slot, phrases in g.FILLERS.items():
        for phrase in phrases:
            assert not any(g.parse_caption(phrase).values()), (slot, phrase)


@pytest.mark.parametrize(
    "answer, f1, attrs",
    [
        # right, in the target's words
        ("In this video, there are two red circles on a black background. They are moving throughout the clip.",
         1.0, dict(count=1, colour=1, shape=1, background=1, motion=1)),
        # right, paraphrased fillers (scoring ignores wording)
        ("Here we can see that there are two red circles over a black background. They are moving the whole time. "
         "The shot is static.", 1.0, dict(count=1, colour=1, shape=1, background=1, motion=1)),
        # one wrong value (blue instead of red): 4 right of 5 stated, 4 of 5 true -> P = R = 0.8
        ("There are two blue circles on a black background. They are moving.", 0.8,
         dict(count=1, colour=0, shape=1, background=1, motion=1)),
        # partially right: only three attributes stated, all right -> P 1, R 0.6, F1 0.75
        ("There are two red circles.", 0.75, dict(count=1, colour=1, shape=1, background=0, motion=0)),
        # hedged: both colours stated -> colour not counted as right; P 5/6, R 1 -> F1 10/11
        ("Two red or green circles on a black background, moving.", 10 / 11,
         dict(count=1, colour=0, shape=1, background=1, motion=1)),
        # all wrong
        ("One yellow square on a white background. It is still.", 0.0,
         dict(count=0, colour=0, shape=0, background=0, motion=0)),
        ("", 0.0, dict(count=0, colour=0, shape=0, background=0, motion=0)),
    ],
)
def test_score_caption_on_hand_written_answers(answer, f1, attrs):
    scores = g.score_caption(answer, TRUTH)
    assert scores["anchor_f1"] == pytest.approx(f1)
    assert {a: scores[f"attr_{a}"] for a in g.ATTRIBUTES} == attrs


def test_score_caption_takes_a_dict_and_refuses_bad_truth():
    assert g.score_caption("two red circles", TRUTH.as_dict())["attr_shape"] == 1.0
    with pytest.raises(ValueError, match="colour='pink'"):
        g.score_caption("x", dict(TRUTH.as_dict(), colour="pink"))
    with pytest.raises(KeyError, match="motion"):
        g.score_caption("x", {k: v for k, v in TRUTH.as_dict().items() if k != "motion"})


def test_mcq_prompt_answer_and_parser():
    prompt = g.mcq_prompt("colour")
    assert "A. red\nB. green\nC. blue\nD. yellow" in prompt and prompt.endswith("The best answer is:")
    assert g.mcq_answer(TRUTH, "colour") == "A" and g.mcq_answer(TRUTH, "count") == "B"
    assert g.mcq_answer(TRUTH, "motion") == "A"
    for text, letter in [("B", "B"), ("B.", "B"), (" (C) blue", "C"), ("The answer is D", "D"), ("blue", None),
                         ("", None)]:
        assert g.parse_mcq(text) == letter, text


# -- task data ---------------------------------------------------------------------------------------

def test_committed_task_docs_match_the_generator():
    from testbed.make_task import docs

    caption_docs, mcq_docs = docs()
    for name, rows in (("caption.jsonl", caption_docs), ("mcq.jsonl", mcq_docs)):
        committed = [json.loads(line) for line in (TASK_DIR / name).read_text().splitlines()]
        assert committed == rows, name
    assert len(caption_docs) == len(mcq_docs) >= 200
    assert {d["attribute"] for d in mcq_docs} == set(g.ATTRIBUTES)


def test_validation_tasks_are_disjoint_from_test_and_from_the_training_checks():
    """Settings are chosen on lvspec_testbed_*_val (docs/testbed.md): committed docs equal the generator's, their
    clips exist, and their seeds share nothing with the test clips nor with the val clips every committed role's
    stop checks used (the first n_val of the val split)."""
    from testbed.make_task import DEFAULT_N_VAL, DOC_FILES, docs

    caption_docs, mcq_docs = docs(DEFAULT_N_VAL, "val")
    for name, rows in zip(DOC_FILES["val"], (caption_docs, mcq_docs)):
        committed = [json.loads(line) for line in (TASK_DIR / name).read_text().splitlines()]
        assert committed == rows, name
    val = {d["seed"] for d in caption_docs}
    assert len(val) == DEFAULT_N_VAL == 60 and {d["seed"] for d in mcq_docs} == val
    test = {json.loads(line)["seed"] for line in (TASK_DIR / "caption.jsonl").read_text().splitlines()}
    assert not val & test
    records = sorted(WEIGHTS.glob("*/testbed.json"))
    assert len(records) >= 4
    for record in records:
        n_val = json.loads(record.read_text())["n_val"]
        assert not val & set(clips.split_seeds("val", n_val)), record
    assert all((TASK_DIR / "videos" / d["video"]).is_file() for d in caption_docs)
    for split in ("caption", "mcq"):
        config = (TASK_DIR / f"lvspec_testbed_{split}_val.yaml").read_text()
        assert f"task: lvspec_testbed_{split}_val" in config and f"validation: {split}_val.jsonl" in config
        assert "validation_split: validation" in config and "test_split" not in config
    with pytest.raises(ValueError, match="unknown task split"):
        docs(3, "train")


def test_committed_clips_decode_to_the_rendered_frames():
    import decord

    for doc in [json.loads(line) for line in (TASK_DIR / "caption.jsonl").read_text().splitlines()][:5]:
        vr = decord.VideoReader(str(TASK_DIR / "videos" / doc["video"]))
        frames = vr.get_batch(list(range(len(vr)))).asnumpy()
        rendered, attrs = clips.render(doc["seed"])
        assert attrs.as_dict() == doc["attributes"]
        assert frames.shape == rendered.shape
        assert np.abs(frames.astype(int) - rendered.astype(int)).mean() < 4.0


def test_task_hooks_score_like_the_grammar():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tb_utils", TASK_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    doc = json.loads((TASK_DIR / "caption.jsonl").read_text().splitlines()[0])
    assert utils.caption_results(doc, [doc["answer"]])["anchor_f1"] == 1.0
    assert Path(utils.doc_to_visual(doc)[0]).is_file()
    mdoc = json.loads((TASK_DIR / "mcq.jsonl").read_text().splitlines()[0])
    assert utils.mcq_results(mdoc, [mdoc["answer"]]) == {"accuracy": 1.0}
    assert utils.mcq_results(mdoc, ["Z"]) == {"accuracy": 0.0}


@pytest.mark.parametrize("family_name,phases", [
    ("qwen2_5_vl", ((("motion",), 40), (("motion", "count"), 20))),
    ("llava_onevision", ((("shape",), 60),)),
    ("qwen3_vl", ((("motion",), 40), (("motion", "count"), 20))),
])
def test_vision_pretraining_trains_the_tower_alone(family_name, phases):
    """Phase by phase, the throw-away heads learn their attributes from the pooled video features;
    text weights stay put."""
    import random

    import torch

    from testbed.families import family
    from testbed.train.model import build_model
    from testbed.train.roles import RoleSpec
    from testbed.train.vision import pretrain_vision
    from testbed.vocab import VocabMap, reduced_ids

    fam = family(family_name)
    spec = RoleSpec(hidden=32, layers=1, intermediate=64, vision_hidden=32, vision_depth=1, lr=3e-3, style="target",
                      stop_f1=0, stop_min_attr=0, stop_mcq=0, max_minutes=1, seed=0, family=family_name,
                      vision_pretrain=phases)
    tok = fam.tokenizer()
    model = build_model(spec, VocabMap(reduced_ids(tok, fam)), tok)
    seeds = clips.split_seeds("train", 8)
    pixels = np.stack([fam.encode(clips.roundtrip(clips.render(s)[0])) for s in seeds]).astype(np.float16)
    attrs = [clips.clip_attributes(s) for s in seeds]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = pretrain_vision(model, spec, pixels, attrs, random.Random(0), 8, "test")
    # a log entry every 50 steps and at the end of each phase, naming the phase's attributes
    ends = [sum(n for _, n in phases[: i + 1]) for i in range(len(phases))]
    assert [e["step"] for e in log] == sorted({*range(50, ends[-1] + 1, 50), *ends})
    assert [e["attributes"] for e in log if e["step"] in ends] == [list(a) for a, _ in phases]
    last = phases[-1][0]
    assert set(log[-1]["batch_accuracy"]) == set(last)
    in_last = [e["loss"] for e in log if e["attributes"] == list(last)]
    assert all(log[-1]["batch_accuracy"][a] == 1.0 for a in last) and in_last[-1] < in_last[0] + 1e-9
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    vision = {n for n in before if any(v in f".{n}" for v in fam.vision_params)}
    assert changed <= vision  # the language model is untouched
    assert any("patch_embed" in n for n in changed)  # the tower itself learned (not only the projector)


def test_role_spec_reads_old_and_new_records():
    """testbed.json records of both layouts (one pre-training phase as `vision_pretrain_steps` + attributes,
    or phases) give the same RoleSpec; a JSON round trip of a spec gives the spec back."""
    import dataclasses

    from testbed.train.roles import ROLES, RoleSpec

    for role, spec in ROLES.items():
        record = json.loads(json.dumps(dataclasses.asdict(spec)))
        assert RoleSpec.from_record(record) == spec, role
    base = dataclasses.asdict(ROLES["llava_target"])
    old = dict(base, vision_pretrain=["shape", "count"], vision_pretrain_steps=300)
    assert RoleSpec.from_record(old).vision_pretrain == ((("shape", "count"), 300),)
    assert RoleSpec.from_record(dict(base, vision_pretrain=[], vision_pretrain_steps=0)).vision_pretrain == ()


# -- variants, selection on validation, the regenerated report ------------------------------------------

def test_variant_registry_names_the_paper_and_the_project_and_pairs_by_drafter_input():
    """`lvspec` is the paper's method (LVSpecArgs defaults); each project variant changes one component; every
    loose variant pairs with the lossless variant of the same drafter input."""
    from lvspec_eval.config import LVSpecArgs
    from testbed import variants as v

    paper = v.VARIANTS["lvspec"]
    assert paper.origin == "paper" and paper.model_args == ()
    assert paper.args().rule_params() == LVSpecArgs(method="lvspec").rule_params()
    for name in ("lvspec+attention", "lvspec+target_prob", "lvspec+full_video"):
        assert v.VARIANTS[name].origin == "project" and len(v.VARIANTS[name].model_args) == 1, name
    expected = {"ar": None, "sd": None, "specvlm": None, "lvspec": "specvlm", "lvspec+attention": "specvlm",
                "lvspec+target_prob": "specvlm", "random": "specvlm", "lvspec+full_video": "sd", "fly": "sd",
                "fly_plus": "sd", "lvspec@self": "sd@self", "fly@self": "sd@self", "sd@self": None}
    assert {s: v.counterpart(s) for s in expected} == expected
    assert v.counterpart("lvspec", {"num_draft_tokens": "6"}) == "specvlm"  # the same extra args on both sides
    assert v.with_counterparts(["fly", "lvspec+attention"]) == ["ar", "fly", "lvspec+attention", "sd", "specvlm"]
    assert v.find("lvspec", LVSpecArgs(method="lvspec", relevance_repr="attention").rule_params()) == "lvspec+attention"
    assert v.find("lvspec", LVSpecArgs(method="lvspec", relax_ratio=0.5).rule_params()) is None
    assert v.label("sd@self") == "sd (Self-SD)"
    with pytest.raises(SystemExit, match="unknown variant 'lvspecc'"):
        v.parse("lvspecc")


def _sweep_row(method, params, taus, retention, variant=None):
    return {"method": method, "params": params, "variant": variant, "doc_ids": list(range(len(taus))), "taus": taus,
            "retention": retention, "retention_ci": None, "tau_mean": sum(taus) / len(taus)}


def test_sweep_selection_takes_the_highest_tau_ratio_at_the_retention_bar():
    """Hand-made rows: tau_ratio = sum(tau) / sum(counterpart tau) per doc; rows below retention 0.99 never win;
    the pruned lvspec rows pair with specvlm, the unpruned one with sd."""
    from lvspec_eval.config import LVSpecArgs
    from testbed import sweep

    def lv(**kw):
        return LVSpecArgs(method="lvspec", **kw).rule_params()

    rows = [
        _sweep_row("sd", LVSpecArgs(method="sd").rule_params(), [4.0, 4.0], 1.0, "sd"),
        _sweep_row("specvlm", LVSpecArgs(method="specvlm").rule_params(), [2.0, 4.0], 1.0, "specvlm"),
        _sweep_row("lvspec", lv(), [4.0, 5.0], 0.995, "lvspec"),  # 9 / 6 = 1.5
        _sweep_row("lvspec", lv(relax_ratio=0.9), [6.0, 6.0], 0.98),  # 12 / 6 = 2.0, below the bar
        _sweep_row("lvspec", lv(relax_ratio=0.5), [3.0, 3.0], 1.0),  # 1.0
        _sweep_row("lvspec", lv(relevance_repr="attention"), [5.0, 5.0], 0.99, "lvspec+attention"),  # 10 / 6
        _sweep_row("lvspec", lv(draft_video_keep=1.0), [6.0, 6.0], 1.0, "lvspec+full_video"),  # 12 / 8 = 1.5 vs sd
    ]
    sweep.compare(rows, resamples=0)
    assert [r.get("tau_ratio") for r in rows] == [None, None, 1.5, 2.0, 1.0, 10 / 6, 1.5]
    assert [r.get("counterpart") for r in rows] == [None, None, "specvlm", "specvlm", "specvlm", "specvlm", "sd"]
    sel = sweep.select(rows, "val")
    assert sel["overall"]["params"] == lv(relevance_repr="attention") and not sel["for_reading_only"]
    assert sel["families"]["rank / embedding / pruned"]["params"] == lv()  # 1.5 beats 1.0; 2.0 misses the bar
    registry = {item["variant"]: item["is_winner"] for item in sel["registry"]}
    assert registry == {"lvspec": True, "lvspec+attention": True, "lvspec+full_video": True}
    assert sweep.select(rows, "test")["for_reading_only"]
    assert "TEST clips: for reading only" in sweep.selection_markdown(sweep.select(rows, "test"))
    assert sweep.select(rows, "val", min_retention=1.0)["overall"]["params"] == lv(draft_video_keep=1.0)
    # a registered setting that only differs from its family's winner by the rule's order is said to tie it
    # (listed first, the unregistered w = 0 row is the one max() keeps among equals)
    tie = [_sweep_row("lvspec", lv(shift_window=0), [4.0, 5.0], 0.995), *rows]
    sweep.compare(tie, resamples=0)
    item = next(i for i in sweep.select(tie, "val")["registry"] if i["variant"] == "lvspec")
    assert not item["is_winner"] and item["ties_winner"]
    assert "`lvspec` (λ 0.7, w 2; tau_ratio 1.500, retention 0.995) ties its family's winner (λ 0.7, w 0" in \
        sweep.selection_markdown(sweep.select(tie, "val"))


def test_testbed_report_blocks_come_from_the_sources(tmp_path):
    """The committed reports/testbed.md equals what its sources give; a block renders the numbers of its JSON, and
    a missing source gives the marked placeholder."""
    import subprocess
    import sys

    from testbed import report

    proc = subprocess.run([sys.executable, "-m", "testbed.report", "--check"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = {"variant": "lvspec", "variant_label": "lvspec", "origin": "paper", "counterpart_variant": "specvlm",
           "tau_mean": 6.123, "tau_ratio": 1.4321, "tau_ratio_ci": [1.3, 1.5], "speedup_decode_pooled": 1.8,
           "speedup_decode_pooled_ci": [1.7, 1.9], "token_rate_speedup_pooled": 1.75,
           "token_rate_speedup_pooled_ci": None, "new_tokens_mean": 40.0, "ar_new_tokens_mean": 39.0,
           "exact_match_ar_mean": 0.0, "score": 0.9, "retention": 0.9123, "retention_ci": [0.88, 0.94], "failed": 0,
           "metric": "anchor_f1"}
    spec = dict(row, variant="specvlm", variant_label="specvlm", origin="baseline", counterpart_variant=None,
                tau_ratio=None, speedup_decode_pooled=1.2, retention=1.0)
    demo = {"meta": {"family": "qwen", "split": "test", "command": "python -m testbed.demo --limit 2", "minutes": 1.0,
                     "cores": 2, "note": "n."}, "tasks": {"lvspec_testbed_caption": [row, spec]}}
    source = tmp_path / "summary.json"
    source.write_text(json.dumps(demo))
    text = "a\n<!-- BEGIN GENERATED demo x -->\nold\n<!-- END GENERATED demo -->\nb\n" \
           "<!-- BEGIN GENERATED bars -->\n<!-- END GENERATED bars -->\n"
    out = report.regenerate(text, {"demo": (source, report.demo_block), "bars": (source, report.bars_block)})
    assert out.startswith("a\n<!-- BEGIN GENERATED demo x -->\nCommand: `python -m testbed.demo --limit 2`")
    assert "1.432 [1.300, 1.500]" in out and "0.912 [0.880, 0.940]" in out and "old" not in out
    assert "| lvspec | specvlm | 1.432 [1.300, 1.500] | 0.912 [0.880, 0.940] | 1.500 | not reached | met |" in out
    missing = report.regenerate(text, {"demo": (tmp_path / "none.json", report.demo_block),
                                       "bars": (tmp_path / "none.json", report.bars_block)})
    assert missing.count("**To be regenerated.**") == 2 and "make demo" in missing
    with pytest.raises(SystemExit, match="GENERATED block 'demo'"):
        report.regenerate(text, {})


def test_demo_runs_its_jobs_side_by_side_and_summarises_them(tmp_path, capsys):
    """`make demo`'s command on 2 clips: a loose variant (fly), its added lossless counterpart (sd) and `ar`,
    two lmms-eval runs at a time (children of the tests' fork server, side by side); the summary has every
    row, with records behind it."""
    from testbed.demo import main
    from testbed.fixtures.cli_zygote import zygote_spawn

    out = tmp_path / "demo"
    main(["--limit", "2", "--methods", "fly", "--tasks", "mcq", "--jobs", "2", "--out", str(out)], spawn=zygote_spawn())
    assert "lvspec_testbed_mcq (test clips; score = " in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["tasks"]["lvspec_testbed_mcq"]  # MCQ: one-letter answers, the quickest runs
    assert [r["variant"] for r in rows] == ["ar", "fly", "sd"]  # in the order of --methods, added ones last
    assert all(r["failed"] == 0 and r["samples"] == 2 for r in rows), rows
    assert "2 run(s) at a time" in summary["meta"]["note"]
    fly = next(r for r in rows if r["variant"] == "fly")
    assert fly["counterpart_variant"] == "sd" and fly["tau_mean"] >= 1.0
