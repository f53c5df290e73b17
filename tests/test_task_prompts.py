"""A task's model-specific prompt as lmms-eval gives it to the family's built-in backend
(lvspec_eval/lmms/task_prompts.py): unit tests on a stand-in task, and the real CLI against the
built-in `qwen2_5_vl` on a task whose prompt has a `qwen2_5_vl` entry."""

import pytest

from lvspec_eval.lmms.task_prompts import BuiltinPrompts


class _Config:
    def __init__(self, specific, generation=None):
        self.lmms_eval_specific_kwargs = specific
        self.model_specific_generation_kwargs = generation


class _Task:
    """The parts of lmms-eval's ConfigurableMessagesTask that doc_to_messages reads."""

    def __init__(self, model_name, specific, generation=None):
        self.model_name = model_name
        self.config = _Config(specific, generation)
        resolved = specific.get(model_name, specific.get("default"))
        self.lmms_eval_specific_kwargs = resolved
        self.calls = 0

    def doc_to_messages(self, doc):
        self.calls += 1
        kw = self.lmms_eval_specific_kwargs
        return [{"role": "user", "content": [{"type": "text", "text": kw["pre_prompt"] + doc["q"] + kw["post_prompt"]}]}]


SPECIFIC = {"default": {"pre_prompt": "", "post_prompt": ""},
            "qwen3_vl": {"pre_prompt": "Question: ", "post_prompt": " Answer with the option letter only."}}


def text(messages):
    return messages[0]["content"][0]["text"]


def test_the_builtins_entry_is_used_and_the_task_is_not_modified():
    task = _Task("lvspec_qwen3_vl", SPECIFIC, {"qwen3_vl": {"max_new_tokens": 5}, "default": {}})
    prompts = BuiltinPrompts("qwen3_vl")
    assert text(prompts.messages(task.doc_to_messages, {"q": "Which?"})) == "Question: Which? Answer with the option letter only."
    assert text(task.doc_to_messages({"q": "Which?"})) == "Which?"  # the shared task still gives its own prompt
    assert task.lmms_eval_specific_kwargs == SPECIFIC["default"]
    gen = prompts.generation_kwargs(task.doc_to_messages, {"max_new_tokens": 16, "temperature": 0})
    assert gen == {"max_new_tokens": 5, "temperature": 0}


def test_no_entry_for_the_builtin_or_a_task_built_for_it_is_asked_directly():
    plain = _Task("lvspec_qwen", SPECIFIC, None)
    prompts = BuiltinPrompts("qwen2_5_vl")  # SPECIFIC has no qwen2_5_vl entry: the default prompt, as the built-in
    assert text(prompts.messages(plain.doc_to_messages, {"q": "Which?"})) == "Which?" and plain.calls == 1
    assert prompts.generation_kwargs(plain.doc_to_messages, {"a": 1}) == {"a": 1}
    own = _Task("qwen3_vl", SPECIFIC)  # already resolved for the built-in's name
    assert text(BuiltinPrompts("qwen3_vl").messages(own.doc_to_messages, {"q": "Q"})) == "Question: Q Answer with the option letter only."
    assert BuiltinPrompts("qwen3_vl").messages(lambda doc: "plain function", {}) == "plain function"


@pytest.mark.slow
def test_qwen_ar_gets_the_builtins_task_prompt_through_the_cli(tmp_path, tiny_target, task_dir):
    """lmms-eval builds the task for `--model lvspec_qwen` (the default prompt); our backend asks for the
    `qwen2_5_vl` entry, so its answers equal the built-in's; the same docs with only a default prompt
    give shorter prompts (the entry was really used)."""
    from lvspec_eval.metrics.records import read_records
    from testbed.fixtures.cli import PIXELS, outputs, response, run_cli, task_variant

    docs = [{"id": f"clip_{i}", "video": f"clip_{i}.mp4", "question": "Describe the video.", "answer": "x"}
            for i in range(3)]
    greedy = {"temperature": 0, "do_sample": False, "max_new_tokens": 12}
    specific = {"lmms_eval_specific_kwargs": {
        "default": {"pre_prompt": "", "post_prompt": ""},
        "qwen2_5_vl": {"pre_prompt": "Look at every frame first. ", "post_prompt": " Answer in one short sentence."}}}
    root = tmp_path / "tasks"
    task_variant(root / "specific", "lvspec_specific", docs, task_dir / "videos", greedy, specific)
    task_variant(root / "plain", "lvspec_plain", docs, task_dir / "videos", greedy)
    stats = tmp_path / "ours.jsonl"
    run_cli("lvspec_qwen", f"pretrained={tiny_target},method=ar,device_map=cpu,{PIXELS},stats_path={stats}", root,
            tmp_path / "ours", tasks="lvspec_specific,lvspec_plain")
    run_cli("qwen2_5_vl", f"pretrained={tiny_target},device_map=cpu,{PIXELS}", root, tmp_path / "theirs",
            tasks="lvspec_specific")
    _, ours = outputs(tmp_path / "ours", "lvspec_specific")
    _, theirs = outputs(tmp_path / "theirs", "lvspec_specific")
    assert [s["doc_id"] for s in ours] == [s["doc_id"] for s in theirs] == [0, 1, 2]
    assert [response(s) for s in ours] == [response(s) for s in theirs]
    records = {(r["task"], r["doc_id"]): r for r in read_records(stats)}
    assert len(records) == 6 and not any(r.get("error") for r in records.values())
    for i in range(3):
        assert records[("lvspec_specific", i)]["prompt_tokens"] > records[("lvspec_plain", i)]["prompt_tokens"]
