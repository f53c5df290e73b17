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

    from testbed import train as T
    from testbed.families import family
    from testbed.vocab import VocabMap, reduced_ids

    fam = family(family_name)
    spec = T.RoleSpec(hidden=32, layers=1, intermediate=64, vision_hidden=32, vision_depth=1, lr=3e-3, style="target",
                      stop_f1=0, stop_min_attr=0, stop_mcq=0, max_minutes=1, seed=0, family=family_name,
                      vision_pretrain=phases)
    tok = fam.tokenizer()
    model = T.build_model(spec, VocabMap(reduced_ids(tok, fam)), tok)
    seeds = clips.split_seeds("train", 8)
    pixels = np.stack([fam.encode(clips.roundtrip(clips.render(s)[0])) for s in seeds]).astype(np.float16)
    attrs = [clips.clip_attributes(s) for s in seeds]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = T.pretrain_vision(model, spec, pixels, attrs, random.Random(0), 8, "test")
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

    from testbed import train as T

    for role, spec in T.ROLES.items():
        record = json.loads(json.dumps(dataclasses.asdict(spec)))
        assert T.RoleSpec.from_record(record) == spec, role
    base = dataclasses.asdict(T.ROLES["llava_target"])
    old = dict(base, vision_pretrain=["shape", "count"], vision_pretrain_steps=300)
    assert T.RoleSpec.from_record(old).vision_pretrain == ((("shape", "count"), 300),)
    assert T.RoleSpec.from_record(dict(base, vision_pretrain=[], vision_pretrain_steps=0)).vision_pretrain == ()
