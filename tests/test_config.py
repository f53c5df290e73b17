"""Model args: flat, typed, unknown ones rejected with the valid list; import hygiene."""

import subprocess
import sys

import pytest

from lvspec_eval.config import ArgsError, LVSpecArgs


def test_defaults_follow_the_paper():
    a = LVSpecArgs()
    assert (a.pretrained, a.draft_pretrained) == ("Qwen/Qwen2.5-VL-32B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert (a.num_draft_tokens, a.relax_ratio, a.top_n, a.shift_window) == (10, 0.7, 10, 2)
    # baselines as their authors' code computes them (docs/baselines.md)
    assert (a.fly_window, a.fly_window_rule, a.fly_entropy, a.fly_entropy_top_k, a.fly_entropy_norm) == (
        6, "amd", 0.3, 3, "full")
    assert (a.draft_video_mass, a.draft_video_layer, a.draft_video_fill) == (0.4, None, "linspace")
    # the paper's reading (method.md section 3): rank rule, top-N cosine of the input embedding against the
    # projected visual features; this project's attention / target_prob stay opt-in
    assert (a.anchor_rule, a.anchor_side, a.relevance_repr, a.relevance_layer) == ("rank", "both", "embedding", -1)
    assert a.method == "lvspec" and a.draft_video_keep is None and a.video_keep() == 0.1  # pruned drafter (section 5)


def test_unknown_arg_lists_valid_ones():
    with pytest.raises(ArgsError) as err:
        LVSpecArgs.from_kwargs(methd="sd")
    msg = str(err.value)
    assert "methd" in msg and "num_draft_tokens" in msg and "relax_ratio" in msg


def test_coercion_from_cli_strings():
    a = LVSpecArgs.from_kwargs(num_draft_tokens="4", relax_ratio="0.5", paired_baseline="true", fps="none", seed=3)
    assert a.num_draft_tokens == 4 and a.relax_ratio == 0.5 and a.paired_baseline is True and a.fps is None
    with pytest.raises(ArgsError, match="num_draft_tokens"):
        LVSpecArgs.from_kwargs(num_draft_tokens="many")
    with pytest.raises(ArgsError, match="num_draft_tokens"):
        LVSpecArgs.from_kwargs(num_draft_tokens=2.5)


@pytest.mark.parametrize("kwargs,needle", [
    ({"method": "beam"}, "choose one of"),
    ({"relax_ratio": 1.5}, "relax_ratio"),
    ({"anchor_rule": "top"}, "anchor_rule"),
    ({"num_draft_tokens": 0}, "num_draft_tokens"),
    ({"min_pixels": 10, "max_pixels": 5}, "max_pixels"),
    ({"draft_video_keep": 0}, r"draft_video_keep=0.* \(0, 1\]"),
    ({"draft_video_keep": 1.5}, "draft_video_keep"),
    ({"draft_video_mass": -0.1}, "draft_video_mass"),
    ({"draft_video_fill": "random"}, r"draft_video_fill='random' is not valid; choose one of: linspace, dither"),
    ({"fly_window_rule": "vllm"}, r"fly_window_rule='vllm' is not valid; choose one of: amd, in_block"),
    ({"fly_entropy_norm": "log2"}, r"fly_entropy_norm='log2' is not valid; choose one of: full, top_k"),
    ({"fly_entropy_top_k": 0}, "fly_entropy_top_k"),
    ({"draft_video_layer": "last"}, "draft_video_layer"),
])
def test_bad_values_name_the_problem(kwargs, needle):
    with pytest.raises(ArgsError, match=needle):
        LVSpecArgs.from_kwargs(**kwargs)


SCHEDULE = {"draft_schedule": "auto", "short_answer_tokens": 32}  # every drafting method records its draft schedule


def test_rule_params_are_the_method_settings():
    assert LVSpecArgs(method="sd").rule_params() == {"num_draft_tokens": 10, **SCHEDULE}
    assert LVSpecArgs(method="fly").rule_params() == {
        "num_draft_tokens": 10, "fly_window": 6, "fly_window_rule": "amd", "fly_entropy": 0.3, "fly_entropy_top_k": 3,
        "fly_entropy_norm": "full", **SCHEDULE}
    assert LVSpecArgs(method="fly_plus").rule_params() == {
        "num_draft_tokens": 10, "fly_entropy": 0.3, "fly_entropy_top_k": 3, "fly_entropy_norm": "full", **SCHEDULE}
    assert LVSpecArgs(method="ar").rule_params() == {}
    assert set(LVSpecArgs(method="lvspec").rule_params()) >= {"relax_ratio", "top_n", "shift_window", "anchor_rule", "anchor_side"}


def test_draft_video_keep_defaults_per_method():
    """specvlm, lvspec (the paper's drafter input), random (the paper's control of lvspec) and Self-SD prune to
    10% unless told otherwise; sd, fly and fly_plus (AMD-AGI/FLy prunes nothing) only when asked."""
    for name in ("specvlm", "lvspec", "random"):
        assert LVSpecArgs(method=name).video_keep() == 0.1, name
    for name in ("sd", "fly", "fly_plus"):
        assert LVSpecArgs(method=name).video_keep() == 1.0, name
        assert LVSpecArgs(method=name, draft_pretrained="self").video_keep() == 0.1, name
    assert LVSpecArgs(method="lvspec", draft_pretrained="self").video_keep() == 0.1
    assert LVSpecArgs(method="lvspec", draft_video_keep=1.0).video_keep() == 1.0  # the unpruned drafter, opt-in
    assert LVSpecArgs(method="lvspec", draft_video_keep=0.2).video_keep() == 0.2
    assert LVSpecArgs(method="specvlm", draft_video_keep=1.0).video_keep() == 1.0
    assert LVSpecArgs(method="ar", draft_video_keep=0.2).video_keep() == 1.0  # ar drafts nothing
    assert LVSpecArgs(method="specvlm").rule_params() == {
        "num_draft_tokens": 10, "draft_video_keep": 0.1, "draft_video_mass": 0.4, "draft_video_layer": None,
        "draft_video_fill": "linspace", **SCHEDULE}
    assert LVSpecArgs.from_kwargs(method="specvlm", draft_video_layer=-1, draft_video_fill="dither").rule_params() == {
        "num_draft_tokens": 10, "draft_video_keep": 0.1, "draft_video_mass": 0.4, "draft_video_layer": -1,
        "draft_video_fill": "dither", **SCHEDULE}
    assert LVSpecArgs.from_kwargs(draft_video_layer="none").draft_video_layer is None
    assert LVSpecArgs.from_kwargs(draft_video_layer="all").draft_video_layer is None
    assert LVSpecArgs.from_kwargs(draft_video_layer=" ALL ").draft_video_layer is None
    assert LVSpecArgs(method="lvspec", draft_video_keep=0.3).rule_params()["draft_video_keep"] == 0.3
    assert LVSpecArgs(method="lvspec").rule_params()["draft_video_keep"] == 0.1
    assert "draft_video_keep" not in LVSpecArgs(method="lvspec", draft_video_keep=1.0).rule_params()
    assert "draft_video_keep" not in LVSpecArgs(method="fly").rule_params()


def test_lossless_counterpart_has_the_same_drafter_input():
    """A loose method pairs with the strict rule on the same drafter input: specvlm for a pruned separate
    drafter (lvspec, random by default), sd for an unpruned one (fly, fly_plus, lvspec with
    draft_video_keep=1), sd@self for Self-SD; the counterpart's rule_params are the loose run's K, pruning
    params and draft schedule, so its records carry exactly those params."""
    from lvspec_eval.config import lossless_counterpart

    fixed = LVSpecArgs(method="lvspec", draft_schedule="fixed").lossless_counterpart()
    assert fixed.rule_params()["draft_schedule"] == "fixed" and "short_answer_tokens" not in fixed.rule_params()
    cases = [
        (dict(method="lvspec"), "specvlm", {"num_draft_tokens": 10, "draft_video_keep": 0.1, "draft_video_mass": 0.4,
                                            "draft_video_layer": None, "draft_video_fill": "linspace"}),
        (dict(method="random", num_draft_tokens=6, draft_video_keep=0.25, draft_video_fill="dither"), "specvlm",
         {"num_draft_tokens": 6, "draft_video_keep": 0.25, "draft_video_mass": 0.4, "draft_video_layer": None,
          "draft_video_fill": "dither"}),
        (dict(method="fly"), "sd", {"num_draft_tokens": 10}),
        (dict(method="fly_plus", num_draft_tokens=4), "sd", {"num_draft_tokens": 4}),
        (dict(method="lvspec", draft_video_keep=1.0), "sd", {"num_draft_tokens": 10}),
        (dict(method="lvspec", draft_pretrained="self"), "sd",
         {"num_draft_tokens": 10, "draft_video_keep": 0.1, "draft_video_mass": 0.4, "draft_video_layer": None,
          "draft_video_fill": "linspace"}),
    ]
    for kwargs, strict, params in cases:
        params = {**params, **SCHEDULE}
        args = LVSpecArgs(**kwargs)
        other = args.lossless_counterpart()
        assert (other.method, other.rule_params()) == (strict, params), kwargs
        assert other.draft_pretrained == args.draft_pretrained
        assert lossless_counterpart(args.method, args.rule_params(), args.draft_pretrained) == (strict, params)
    for name in ("ar", "sd", "specvlm"):
        assert LVSpecArgs(method=name).lossless_counterpart() is None


def test_entry_point_module_does_not_import_torch():
    code = (
        "import sys, importlib.metadata as md\n"
        "eps = [e for e in md.entry_points(group='lmms_eval.models') if e.value.startswith('lvspec_eval')]\n"
        "assert eps, 'entry point not installed'\n"
        "payload = eps[0].load()\n"
        "assert 'torch' not in sys.modules, 'entry-point module imported torch'\n"
        "import lvspec_eval.config, lvspec_eval.metrics.records\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_lmms_eval_finds_the_backend():
    code = (
        "import lmms_eval.models as m\n"
        "man = m.MODEL_REGISTRY_V2.get_manifest('lvspec_qwen')\n"
        "assert man.chat_class_path == 'lvspec_eval.lmms.qwen.LVSpecQwen', man\n"
        "man = m.MODEL_REGISTRY_V2.get_manifest('lvspec_llava_ov')\n"
        "assert man.chat_class_path == 'lvspec_eval.lmms.llava_ov.LVSpecLlavaOV', man\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
