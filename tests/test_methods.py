"""Methods are built once (`lvspec_eval.engine.methods.build_method`): what a Method holds per
method and setting, that nothing else in the package, the testbed or the benchmarks constructs a
rule, an anchor finder or a pruning, and that the backend runs the builder's Method."""

import ast
from pathlib import Path

import pytest

from conftest import VIDEO_ARGS, method
from lvspec_eval.acceptance import FlyPlusRule, FlyRule, LVSpecRule, RandomRule, StrictRule
from lvspec_eval.config import ANCHOR_RULES, ANCHOR_SIDES, RELEVANCE_REPRS, LVSpecArgs
from lvspec_eval.engine import Method, build_method
from lvspec_eval.pruning import VideoPruning
from lvspec_eval.relevance import AnchorRule, AnchorSide, AnchorSpec, RelevanceRepr

ROOT = Path(__file__).resolve().parents[1]


# -- what the builder makes (no models) ----------------------------------------------------------
def test_each_method_gets_its_rule_with_the_args_settings():
    assert method("ar").rule is None and not method("ar").drafts
    assert type(method("sd").rule) is StrictRule and type(method("specvlm").rule) is StrictRule
    lv = method("lvspec", shift_window=3).rule
    assert type(lv) is LVSpecRule and lv.shift_window == 3
    fly = method("fly", fly_window=4, fly_entropy=0.5).rule
    assert type(fly) is FlyRule and (fly.window, fly.entropy_threshold) == (4, 0.5)
    plus = method("fly_plus", fly_entropy=0.25).rule
    assert type(plus) is FlyPlusRule and plus.entropy_threshold == 0.25
    rnd = method("random", random_accept=0.4).rule
    assert type(rnd) is RandomRule and rnd.p == 0.4


def test_anchor_spec_travels_from_the_args():
    built = method("lvspec", anchor_rule="quantile", relax_ratio=0.35, anchor_side="draft", relevance_repr="hidden",
                   top_n=7, relevance_layer=2)
    assert built.anchors == AnchorSpec(rule=AnchorRule.QUANTILE, relax_ratio=0.35, side=AnchorSide.DRAFT,
                                       repr_kind=RelevanceRepr.HIDDEN, top_n=7)
    assert (built.capture_layer, built.probe_layer) == (2, None)
    # every method other than lvspec judges no anchors and reads no relevance signal
    for name in ("ar", "sd", "specvlm", "fly", "fly_plus", "random"):
        other = method(name, relevance_repr="hidden")
        assert other.anchors is None and other.capture_layer is None and other.probe_layer is None


@pytest.mark.parametrize("rule,repr_kind,capture,probe", [
    ("rank", "embedding", None, None), ("rank", "hidden", -2, None), ("rank", "attention", None, -2),
    ("quantile", "attention", None, -2), ("target_prob", "hidden", None, None),
    ("target_prob", "attention", None, None),
])
def test_capture_and_probe_layers_only_where_the_finder_reads_them(rule, repr_kind, capture, probe):
    built = method("lvspec", anchor_rule=rule, relevance_repr=repr_kind, relevance_layer=-2)
    assert (built.capture_layer, built.probe_layer) == (capture, probe)


def test_pruning_follows_the_video_keep_of_the_args():
    for name in ("sd", "fly", "fly_plus", "ar"):  # full video (FLy's code prunes nothing)
        assert method(name).pruning is None, name
    for name in ("lvspec", "random"):  # the paper's drafter input (method.md section 5), SpecVLM's defaults
        assert method(name).pruning == VideoPruning(keep=0.1, mass=0.4, layer="all", fill="linspace"), name
    assert method("lvspec", draft_video_keep=1.0).pruning is None  # the unpruned drafter, opt-in
    # the paper's relevance by default: top-N cosine of the input embedding, no hidden capture or attention probe
    default = method("lvspec")
    assert default.anchors == AnchorSpec(rule=AnchorRule.RANK, relax_ratio=0.7, side=AnchorSide.BOTH,
                                         repr_kind=RelevanceRepr.EMBEDDING, top_n=10)
    assert (default.capture_layer, default.probe_layer) == (None, None)
    assert method("specvlm", draft_video_mass=0.3, draft_video_layer=1).pruning == VideoPruning(keep=0.1, mass=0.3,
                                                                                                 layer=1)
    assert method("sd", draft_pretrained="self").pruning == VideoPruning(keep=0.1)  # SpecVLM's mass, layers, fill
    assert method("lvspec", draft_video_keep=0.5).pruning == VideoPruning(keep=0.5, mass=0.4, layer="all",
                                                                          fill="linspace")
    assert method("ar", draft_video_keep=0.5).pruning is None  # ar drafts nothing


def test_same_args_same_method_and_another_setting_another():
    args = LVSpecArgs(method="lvspec", relax_ratio=0.5)
    assert build_method(args) == build_method(LVSpecArgs(method="lvspec", relax_ratio=0.5))
    assert build_method(args).args is args
    assert build_method(args) != build_method(args.replace(relax_ratio=0.6))
    assert build_method(args) != build_method(args.replace(shift_window=1))
    assert build_method(LVSpecArgs(method="sd")) != build_method(LVSpecArgs(method="specvlm"))


def test_args_are_frozen():
    """A setting travels one way (args -> builder -> rule): args cannot change under a built method."""
    import dataclasses

    built = method("lvspec")
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.args.relax_ratio = 0.1


def test_choice_enums_match_the_model_args_choices():
    assert tuple(e.value for e in AnchorRule) == ANCHOR_RULES
    assert tuple(e.value for e in AnchorSide) == ANCHOR_SIDES
    assert tuple(e.value for e in RelevanceRepr) == RELEVANCE_REPRS


# -- one place: nobody else constructs a rule, a finder or a pruning -----------------------------
BUILDER = "lvspec_eval/engine/methods.py"
RELEVANCE = "lvspec_eval/relevance.py"
#: constructor (or factory) -> the only file allowed to call it
ONLY_IN = {
    **{name: BUILDER for name in ("StrictRule", "LVSpecRule", "FlyRule", "FlyPlusRule", "RandomRule", "AnchorSpec",
                                  "VideoPruning", "AnchorRule", "AnchorSide", "RelevanceRepr", "_rule",
                                  "build_rule")},
    **{name: RELEVANCE for name in ("AnchorFinder", "AnchorSelector", "RelevanceScorer", "finder", "finder_over",
                                    "build_anchor_finder")},
}


def _calls(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in ONLY_IN:
                out.append((name, node.lineno))
    return out


def test_nothing_outside_the_builder_constructs_a_rule_or_an_anchor_finder():
    files = [p for folder in ("lvspec_eval", "testbed", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 30
    found, misplaced = set(), []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for name, line in _calls(path):
            found.add(name)
            if ONLY_IN[name] != rel:
                misplaced.append(f"{rel}:{line} calls {name}(...); build methods with build_method(args) instead")
    assert not misplaced, "\n".join(misplaced)
    # the scan sees the builder's own constructors (so it would see them anywhere else)
    assert {"StrictRule", "LVSpecRule", "FlyRule", "FlyPlusRule", "RandomRule", "AnchorSpec", "VideoPruning",
            "AnchorFinder", "AnchorSelector", "RelevanceScorer"} <= found


# -- the backend runs the builder's Method --------------------------------------------------------
def _requests(backend, clips, n, task="methods", split="test"):
    from lmms_eval.api.instance import Instance

    docs = [{"video": clips[i % len(clips)]} for i in range(n)]
    backend.task_dict = {task: {split: docs}}

    def messages(doc):
        return [{"role": "user", "content": [{"type": "video", "url": doc["video"]},
                                             {"type": "text", "text": "Describe the video."}]}]

    gen_kwargs = {"max_new_tokens": 12, "temperature": 0}
    return [Instance("generate_until", ("", messages, gen_kwargs, i, task, split), idx=0,
                     metadata={"task": task, "doc_id": i, "repeats": 1}) for i in range(n)]


def test_the_backend_runs_the_builders_default_lvspec(tiny_target, tiny_draft, clips, tmp_path, monkeypatch):
    """The backend's Method == build_method of the same args (no other path assembles lvspec), and
    its parts are what reaches the decoding loop."""
    import lvspec_eval.engine.methods as methods_mod
    from lvspec_eval.lmms.qwen import LVSpecQwen
    from lvspec_eval.metrics.records import read_records

    run_args = dict(pretrained=tiny_target, draft_pretrained=tiny_draft, dtype="float32", device_map="cpu",
                    num_draft_tokens=4, stats_path=str(tmp_path / "r.jsonl"), **VIDEO_ARGS)
    backend = LVSpecQwen(**run_args)
    expected = build_method(LVSpecArgs.from_kwargs(**run_args))
    assert backend.method == expected and backend.args.method == "lvspec"

    seen, loop_calls = [], []
    real_method_decode, real_loop_decode = Method.decode, methods_mod.decode

    def spy_method(self, *a, **kw):
        seen.append(self)
        return real_method_decode(self, *a, **kw)

    def spy_loop(*a, **kw):
        loop_calls.append(kw)
        return real_loop_decode(*a, **kw)

    monkeypatch.setattr(Method, "decode", spy_method)
    monkeypatch.setattr(methods_mod, "decode", spy_loop)
    backend.generate_until(_requests(backend, clips, 2))
    assert seen == [expected, expected]
    for kw in loop_calls:
        assert kw["rule"] is backend.method.rule and kw["pruning"] == expected.pruning
        factory = kw["anchor_factory"]  # the spec's factory, bound to an equal spec
        assert factory.__func__ is AnchorSpec.finder and factory.__self__ == expected.anchors
        assert (kw["capture_layer"], kw["video_attention_layer"]) == (expected.capture_layer, expected.probe_layer)
    records = read_records(tmp_path / "r.jsonl")
    assert [r["params"] for r in records] == [expected.args.rule_params()] * 2 and not any(r.get("error") for r in records)


def test_paired_baseline_alternates_its_order_after_one_warm_up(tiny_target, tiny_draft, clips, tmp_path,
                                                               monkeypatch):
    """paired_baseline: one unrecorded warm-up decode of the method, then ar first on every other doc
    (by doc index, not by decode order); the records hold one row per doc with the paired fields,
    and the order does not change any token."""
    from lvspec_eval.lmms.qwen import LVSpecQwen
    from lvspec_eval.metrics.records import read_records

    stats = tmp_path / "paired.jsonl"
    backend = LVSpecQwen(pretrained=tiny_target, draft_pretrained=tiny_draft, method="sd", dtype="float32",
                         device_map="cpu", num_draft_tokens=4, paired_baseline=True, stats_path=str(stats),
                         **VIDEO_ARGS)
    calls = []
    real = Method.decode
    monkeypatch.setattr(Method, "decode", lambda self, *a, **kw: calls.append(self.name) or real(self, *a, **kw))
    requests = _requests(backend, clips, 5)
    backend.generate_until(requests[1:3])  # docs 1, 2: the warm-up comes first
    backend.generate_until(requests[3:] + requests[:1])  # docs 3, 4, 0: no second warm-up
    assert calls == ["sd",  # warm-up
                     "ar", "sd", "sd", "ar",  # doc 1 (odd: ar first), doc 2
                     "ar", "sd", "sd", "ar", "sd", "ar"]  # docs 3, 4, 0
    records = read_records(stats)
    assert sorted(r["doc_id"] for r in records) == [0, 1, 2, 3, 4]
    for r in records:
        assert r["exact_match_ar"] is True and r["text"] == r["ar_text"] and not r.get("error")
