"""The offline fixtures of testbed.fixtures: Qwen tokenizer ids, tiny checkpoints, clips."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from testbed.fixtures.tiny import QWEN2_5_VL_CHAT_TEMPLATE, build_tiny_qwen2_5_vl
from testbed.fixtures.tokenizer import qwen_tokenizer
from testbed.fixtures.video import ensure_clips, make_clip
from testbed.paths import TINY_TASK_DIR as TASK_DIR
from testbed.paths import VIDEO_PIXELS


@pytest.fixture(scope="module")
def two_ckpts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_fixtures")
    return build_tiny_qwen2_5_vl(root / "s0", seed=0), build_tiny_qwen2_5_vl(root / "s1", seed=1)


def test_qwen_tokenizer_ids():
    tok = qwen_tokenizer()
    assert tok("Hello world")["input_ids"] == [9707, 1879]
    expected = {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
        "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
        "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "<|file_sep|>": 151664,
    }
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tok) == 151665
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    # special tokens are atomic and survive a round trip
    ids = tok("<|vision_start|><|video_pad|><|vision_end|>Hi")["input_ids"]
    assert ids[:3] == [151652, 151656, 151653]
    assert tok.decode(ids) == "<|vision_start|><|video_pad|><|vision_end|>Hi"


def test_tiny_checkpoint_loads_by_path(two_ckpts):
    import torch
    from transformers import (
        AutoProcessor,
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
    )

    s0, s1 = two_ckpts
    assert build_tiny_qwen2_5_vl(s0, seed=0) == s0  # idempotent: marker present, returns at once
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(s0)
    processor = AutoProcessor.from_pretrained(s0, **VIDEO_PIXELS)
    tok = AutoTokenizer.from_pretrained(s0)
    assert tok("Hello world")["input_ids"] == [9707, 1879]
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>") == 151656
    assert model.generation_config.eos_token_id == [151645, 151643]
    messages = [{"role": "user", "content": [
        {"type": "video", "video": "x.mp4"}, {"type": "text", "text": "Describe the video."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>Describe the video.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert processor.chat_template == QWEN2_5_VL_CHAT_TEMPLATE

    other = Qwen2_5_VLForConditionalGeneration.from_pretrained(s1)
    w0 = model.get_input_embeddings().weight
    w1 = other.get_input_embeddings().weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)


def test_tiny_checkpoint_generates_from_video(two_ckpts, tmp_path):
    import decord
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    s0, _ = two_ckpts
    clip = make_clip(tmp_path / "c.mp4", seed=3, frames=8)
    frames = torch.from_numpy(decord.VideoReader(str(clip)).get_batch(list(range(8))).asnumpy())
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(s0)
    processor = AutoProcessor.from_pretrained(s0, **VIDEO_PIXELS)
    messages = [{"role": "user", "content": [
        {"type": "video", "video": str(clip)}, {"type": "text", "text": "Describe the video."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames.permute(0, 3, 1, 2)], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(new) == 8 and len(set(new)) > 2  # not the degenerate "repeat the last token" regime


@pytest.mark.parametrize("frames", [16, 9])
def test_make_clip_frame_count(tmp_path, frames):
    import decord

    path = make_clip(tmp_path / f"clip_{frames}.mp4", seed=1, frames=frames, size=64, fps=8)
    vr = decord.VideoReader(str(path))
    assert len(vr) == frames
    assert vr[0].shape == (64, 64, 3)
    assert vr.get_avg_fps() == pytest.approx(8)
    again = make_clip(tmp_path / "again.mp4", seed=1, frames=frames, size=64, fps=8)
    assert again.read_bytes() == path.read_bytes()  # deterministic


def test_ensure_clips_for_tiny_task():
    paths = ensure_clips(TASK_DIR)
    assert [p.name for p in paths] == ["clip_0.mp4", "clip_1.mp4", "clip_2.mp4"]
    assert all(p.is_file() and p.parent == TASK_DIR / "videos" for p in paths)


def test_llava_onevision_tokenizer_ids_and_checkpoint_load_by_path(tmp_path):
    import torch
    from transformers import AutoProcessor, AutoTokenizer, LlavaOnevisionForConditionalGeneration

    from testbed.fixtures.tiny_llava import LLAVA_ONEVISION_CHAT_TEMPLATE, build_tiny_llava_onevision

    tok = qwen_tokenizer(layout="llava_onevision")
    assert len(tok) == 151648 and tok("Hello world")["input_ids"] == [9707, 1879]
    assert tok.convert_tokens_to_ids(["<image>", "<video>"]) == [151646, 151647]
    path = build_tiny_llava_onevision(tmp_path / "llava", seed=0, vocab_size=152000)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    assert model.get_output_embeddings().weight.shape[0] == 152000
    processor = AutoProcessor.from_pretrained(path)
    loaded = AutoTokenizer.from_pretrained(path)
    assert loaded.get_vocab() == tok.get_vocab() and loaded.chat_template == LLAVA_ONEVISION_CHAT_TEMPLATE
    # string content (lmms-eval's llava_hf) and list content render the same prompt
    as_string = loaded.apply_chat_template([{"role": "user", "content": "<video>\nHi"}], tokenize=False,
                                           add_generation_prompt=True)
    as_list = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi"}]}],
                                            tokenize=False, add_generation_prompt=True)
    assert as_string == as_list == "<|im_start|>user <video>\nHi<|im_end|><|im_start|>assistant\n"
