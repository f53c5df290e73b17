"""Each lvspec backend's defaults are its family's built-in lmms-eval backend's: read here from
lmms-eval itself (the class `--model NAME` resolves to, its signature and source), never from
constants copied into the test (issue 12, point 1)."""

import ast
import inspect
import re
import textwrap

import pytest
import torch

from lvspec_eval.config import BACKEND_BUILTINS, LLAVA_HF_BUILTIN, QWEN2_5_VL_BUILTIN, QWEN3_VL_BUILTIN, UNTIL_POLICIES
from lvspec_eval.lmms import BACKENDS


def builtin_class(spec: str) -> type:
    """The class lmms-eval's CLI runs for `--model NAME [--force_simple]`."""
    from lmms_eval.models import get_model

    name, *flags = spec.split()
    return get_model(name, force_simple="--force_simple" in flags)


def source(fn) -> str:
    return textwrap.dedent(inspect.getsource(fn))


def until_loads(fn) -> list[ast.AST]:
    """Each place `fn` reads the variable `until`, with its parent node."""
    tree = ast.parse(source(fn))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return [parents[n] for n in ast.walk(tree)
            if isinstance(n, ast.Name) and n.id == "until" and isinstance(n.ctx, ast.Load)]


def test_every_backend_names_the_builtin_it_mirrors():
    import importlib

    assert set(BACKEND_BUILTINS) == set(BACKENDS)
    for name, path in BACKENDS.items():
        module, cls = path.rsplit(".", 1)
        assert getattr(importlib.import_module(module), cls).builtin is BACKEND_BUILTINS[name]
    assert {b.until for b in BACKEND_BUILTINS.values()} <= set(UNTIL_POLICIES)


def test_qwen_mirrors_the_chat_qwen2_5_vl_that_the_cli_picks():
    cls = builtin_class(QWEN2_5_VL_BUILTIN.backend)
    assert cls.__module__ == "lmms_eval.models.chat.qwen2_5_vl" and cls.is_simple is False
    gen = source(cls.generate_until)
    # dtype: fixed in the constructor (no dtype argument)
    init = source(cls.__init__)
    assert "dtype" not in inspect.signature(cls.__init__).parameters
    assert re.findall(r'"torch_dtype":\s*"(\w+)"', init) == [QWEN2_5_VL_BUILTIN.dtype]
    # max_new_tokens when the task sets none
    assert re.findall(r'"max_new_tokens":\s*(\d+)', gen) == [str(QWEN2_5_VL_BUILTIN.max_new_tokens)]
    # `until` is never read
    assert not until_loads(cls.generate_until) and '"until"' not in gen and QWEN2_5_VL_BUILTIN.until == "ignore"
    # EOS: the tokenizer's; greedy unless temperature > 0; decode without clean-up
    assert "eos_token_id=self.tokenizer.eos_token_id" in gen
    assert re.search(r'if current_gen_kwargs\["temperature"\] > 0:', gen)
    assert "skip_special_tokens=True" in gen
    assert re.findall(r"clean_up_tokenization_spaces=(\w+)", gen) == [str(QWEN2_5_VL_BUILTIN.clean_up_spaces)]


def test_llava_ov_mirrors_the_simple_llava_hf():
    cls = builtin_class(LLAVA_HF_BUILTIN.backend)
    assert cls.__module__ == "lmms_eval.models.simple.llava_hf" and cls.is_simple is True
    gen = source(cls.generate_until)
    assert inspect.signature(cls.__init__).parameters["dtype"].default == LLAVA_HF_BUILTIN.dtype
    assert re.findall(r'gen_kwargs\["max_new_tokens"\]\s*=\s*(\d+)', gen) == [str(LLAVA_HF_BUILTIN.max_new_tokens)]
    # `until` is popped, type-checked (a string or a list, else ValueError) and never used to stop: every
    # read of it is an isinstance() check or the wrapping of a single string
    assert 'until = gen_kwargs.pop("until")' in gen and "raise ValueError" in gen
    reads = until_loads(cls.generate_until)
    assert reads and all(isinstance(p, (ast.Call, ast.List)) for p in reads), [ast.dump(p) for p in reads]
    assert all(p.func.id in ("isinstance", "type") for p in reads if isinstance(p, ast.Call))  # type(): the error text
    assert LLAVA_HF_BUILTIN.until == "drop"
    # EOS: the tokenizer's; greedy unless temperature > 0; decode with the tokenizer's own clean-up setting
    assert "eos_token_id=self.eot_token_id" in gen and "return self.tokenizer.eos_token_id" in source(
        cls.eot_token_id.fget)
    assert 'do_sample = True if gen_kwargs["temperature"] > 0 else False' in gen
    assert "batch_decode(cont, skip_special_tokens=True)" in gen and LLAVA_HF_BUILTIN.clean_up_spaces is None


def test_qwen3_vl_mirrors_the_chat_qwen3_vl_that_the_cli_picks():
    """The chat class's generate_until over the simple class's constructor and generate kwargs."""
    cls = builtin_class(QWEN3_VL_BUILTIN.backend)
    assert cls.__module__ == "lmms_eval.models.chat.qwen3_vl" and cls.is_simple is False
    gen, kwargs = source(cls.generate_until), source(cls._build_generate_kwargs)
    assert "generate_kwargs = self._build_generate_kwargs(gen_kwargs)" in gen
    # dtype: fixed in the constructor (no dtype argument)
    assert "dtype" not in inspect.signature(cls.__init__).parameters
    assert re.findall(r'dtype_key:\s*"(\w+)"', source(cls.__init__)) == [QWEN3_VL_BUILTIN.dtype]
    # max_new_tokens when the task sets none: the class defaults under the task's kwargs
    assert "current = {**self.DEFAULT_GEN_KWARGS, **gen_kwargs}" in kwargs
    assert '"max_new_tokens": current["max_new_tokens"]' in kwargs
    assert cls.DEFAULT_GEN_KWARGS["max_new_tokens"] == QWEN3_VL_BUILTIN.max_new_tokens
    # `until` is never read (neither where the request is decoded nor where generate's kwargs are built)
    assert not until_loads(cls.generate_until) and not until_loads(cls._build_generate_kwargs)
    assert '"until"' not in gen + kwargs and QWEN3_VL_BUILTIN.until == "ignore"
    # EOS: the tokenizer's; greedy unless temperature > 0; decode without clean-up
    assert '"eos_token_id": self.tokenizer.eos_token_id' in kwargs
    assert 'if current.get("temperature", 0) > 0:' in kwargs
    assert "skip_special_tokens=True" in gen
    assert re.findall(r"clean_up_tokenization_spaces=(\w+)", gen) == [str(QWEN3_VL_BUILTIN.clean_up_spaces)]
    # the answer is stripped only of a thinking block, and only with enable_thinking (default: unset);
    # lmms-eval's task code strips the response of every backend alike
    assert "ans = self._strip_thinking(ans)" in gen
    assert "if self.enable_thinking:" in source(cls._strip_thinking)
    assert inspect.signature(cls.__init__).parameters["enable_thinking"].default is None


def test_the_until_policies_name_what_lmms_eval_backends_do():
    """`honour_except_blank_line` is the simple qwen2_5_vl's treatment (drops "\\n\\n", cuts at the rest)."""
    simple = builtin_class("qwen2_5_vl --force_simple")
    gen = source(simple.generate_until)
    assert 'until = [item for item in until if item != "\\n\\n"]' in gen
    assert "for term in until:" in gen


@pytest.mark.parametrize("cls_path,ckpt,expected", [
    ("lvspec_eval.lmms.qwen.LVSpecQwen", "tiny_target", torch.bfloat16),  # as qwen2_5_vl: bfloat16
    ("lvspec_eval.lmms.llava_ov.LVSpecLlavaOV", "tiny_llava_target", torch.float32),  # as llava_hf: the checkpoint's
    ("lvspec_eval.lmms.qwen3_vl.LVSpecQwen3VL", "tiny_qwen3_target", torch.bfloat16),  # as qwen3_vl: bfloat16
])
def test_the_family_dtype_applies_when_the_user_gives_none(cls_path, ckpt, expected, request, tmp_path):
    import importlib

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    path = request.getfixturevalue(ckpt)
    assert cls.builtin.dtype in ("bfloat16", "auto")
    backend = cls(pretrained=path, method="ar", device_map="cpu", stats_path=str(tmp_path / "r.jsonl"))
    try:
        assert backend.target.model.dtype == expected and backend.dtype == cls.builtin.dtype
    finally:
        backend._run_lock.release()
    explicit = cls(pretrained=path, method="ar", device_map="cpu", dtype="float16", stats_path=str(tmp_path / "s.jsonl"))
    assert explicit.target.model.dtype == torch.float16 and explicit.dtype == "float16"
    explicit._run_lock.release()
