"""Model args: flat, typed, unknown ones rejected with the valid list; import hygiene."""

import subprocess
import sys

import pytest

from lvspec_eval.config import ArgsError, LVSpecArgs


def test_defaults_follow_the_paper():
    a = LVSpecArgs()
    assert (a.pretrained, a.draft_pretrained) == ("Qwen/Qwen2.5-VL-32B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert (a.num_draft_tokens, a.relax_ratio, a.top_n, a.shift_window) == (10, 0.7, 10, 2)
    assert (a.fly_window, a.fly_entropy) == (6, 0.3)


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
])
def test_bad_values_name_the_problem(kwargs, needle):
    with pytest.raises(ArgsError, match=needle):
        LVSpecArgs.from_kwargs(**kwargs)


def test_rule_params_are_the_method_settings():
    assert LVSpecArgs(method="sd").rule_params() == {"num_draft_tokens": 10}
    assert set(LVSpecArgs(method="lvspec").rule_params()) >= {"relax_ratio", "top_n", "shift_window", "anchor_rule", "anchor_side"}


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
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
