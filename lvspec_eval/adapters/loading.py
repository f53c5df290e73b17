"""Checkpoint loading with clear errors (hub name or local folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional


class CheckpointError(OSError):
    """A checkpoint cannot be found or loaded; the message names the path and the fix."""


def resolve_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}[name]


def default_device_map(device_map: Optional[str]) -> str:
    import torch

    if device_map:
        return device_map
    return "auto" if torch.cuda.is_available() else "cpu"


def looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or os.path.exists(path)


def check_checkpoint(path: str, role: str) -> None:
    """Fail early (before any work) when a local checkpoint folder is missing or incomplete."""
    if not looks_local(path):
        return
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(
            f"{role} checkpoint {path!r} does not exist; give an existing folder or a hub name such as "
            f"'Qwen/Qwen2.5-VL-7B-Instruct'"
        )
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{role} checkpoint folder {path!r} has no config.json; is it a Hugging Face checkpoint folder?")


def load_pretrained(model_class: Any, path: str, **kwargs: Any) -> Any:
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        model = model_class.from_pretrained(str(Path(path).expanduser()) if looks_local(path) else path, **kwargs)
    except OSError as exc:
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached hub models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise CheckpointError(f"cannot load checkpoint {path!r}{hint}: {exc}") from exc
    return model.eval()


class TokenizerMismatchError(ValueError):
    """Target and drafter tokenize differently; speculative decoding needs one vocabulary."""


def check_same_tokenizer(target_tok: Any, draft_tok: Any, target: str, draft: str) -> None:
    """Refuse a target/drafter pair whose tokenizers differ (vocabulary, added or special tokens).

    Embedding sizes may differ (LLaVA-OneVision pads 0.5B/7B/72B differently): the engine compares
    logits over the shared range, so only the tokenizers must agree."""
    if target_tok is draft_tok:
        return
    problems = []
    t_vocab, d_vocab = target_tok.get_vocab(), draft_tok.get_vocab()
    if t_vocab != d_vocab:
        only_t = sorted(set(t_vocab) - set(d_vocab))[:5]
        only_d = sorted(set(d_vocab) - set(t_vocab))[:5]
        moved = sum(1 for tok, i in t_vocab.items() if tok in d_vocab and d_vocab[tok] != i)
        problems.append(f"vocabularies differ ({len(t_vocab)} vs {len(d_vocab)} entries; only in target: {only_t}, "
                        f"only in drafter: {only_d}; {moved} shared tokens with other ids)")
    for attr in ("eos_token", "pad_token", "bos_token"):
        if getattr(target_tok, attr, None) != getattr(draft_tok, attr, None):
            problems.append(f"{attr} {getattr(target_tok, attr, None)!r} vs {getattr(draft_tok, attr, None)!r}")
    if sorted(target_tok.all_special_tokens) != sorted(draft_tok.all_special_tokens):
        problems.append("special tokens differ")
    if problems:
        raise TokenizerMismatchError(
            f"target {target!r} and drafter {draft!r} use different tokenizers: {'; '.join(problems)}. "
            "Speculative decoding needs the same tokenizer: pick a drafter of the same family "
            "(e.g. Qwen2.5-VL-7B for Qwen2.5-VL-32B, LLaVA-OneVision-7B for LLaVA-OneVision-72B) or draft_pretrained=self"
        )
