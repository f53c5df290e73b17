"""Checkpoint loading with clear errors (hub name or local folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

DeviceMap = Union[str, dict[str, Union[str, int]]]


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


def is_map_file(device_map: Optional[str]) -> bool:
    return bool(device_map) and str(device_map).endswith(".json")


def resolve_device_map(device_map: str, role: str, offload_folder: Optional[str] = None) -> DeviceMap:
    """A `from_pretrained` device map: a strategy/device string as given, or the dict of a JSON file.

    A JSON file maps module names to devices, e.g. {"model.visual": 0, "model.language_model.layers.0": 0,
    ..., "lm_head": 1} (values: a GPU index, "cuda:N", "cpu" or "disk"). Checked before any loading."""
    from lvspec_eval.config import ArgsError

    if not is_map_file(device_map):
        return device_map
    path = Path(device_map).expanduser()
    if not path.is_file():
        raise ArgsError(f"{role} device map file {device_map!r} does not exist; give a JSON file mapping module "
                        "names to devices, or a strategy such as auto, balanced, cpu, cuda:0")
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArgsError(f"{role} device map file {device_map!r} is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not mapping or not all(
            isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in mapping.items()):
        raise ArgsError(f"{role} device map file {device_map!r} must hold a non-empty JSON object "
                        '{"module.name": device, ...} with devices like 0, "cuda:1", "cpu" or "disk"')
    if "disk" in mapping.values() and not offload_folder:
        raise ArgsError(f"{role} device map {device_map!r} puts modules on 'disk'; pass offload_folder=<folder>")
    return mapping


def load_tokenizer(path: str, role: str) -> Any:
    """The tokenizer of a checkpoint (cheap: no weights), with the loader's errors made clear."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(Path(path).expanduser()) if looks_local(path) else path)
    except (OSError, ValueError) as exc:
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached hub models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise CheckpointError(f"cannot load the tokenizer of {role} checkpoint {path!r}{hint}: {exc}") from exc


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


def tokenizer_differences(a: Any, b: Any) -> list[str]:
    """What differs between two tokenizers in ways that matter to speculative decoding: the
    token <-> id mapping (added tokens included) and the special tokens. Empty when they agree."""
    diffs = []
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        ia, ib = {i: t for t, i in va.items()}, {i: t for t, i in vb.items()}
        first = min(i for i in set(ia) | set(ib) if ia.get(i) != ib.get(i))
        diffs.append(f"vocabularies differ ({len(va)} vs {len(vb)} tokens; first at id {first}: "
                     f"{ia.get(first)!r} vs {ib.get(first)!r})")
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(a, name, None) != getattr(b, name, None):
            diffs.append(f"{name} {getattr(a, name, None)!r} vs {getattr(b, name, None)!r}")
    sa, sb = set(a.all_special_tokens), set(b.all_special_tokens)
    if sa != sb:
        diffs.append(f"special tokens differ: {sorted(sa - sb)} vs {sorted(sb - sa)}")
    return diffs


def check_same_tokenizer(target_tok: Any, draft_tok: Any, target: str, draft: str) -> None:
    """Refuse a target/drafter pair whose tokenizers differ (vocabulary, added or special tokens).

    Embedding sizes may differ (LLaVA-OneVision pads 0.5B/7B/72B differently): the engine compares
    logits over the shared range, so only the tokenizers must agree."""
    if target_tok is draft_tok:
        return
    diffs = tokenizer_differences(target_tok, draft_tok)
    if diffs:
        raise TokenizerMismatchError(
            f"target {target!r} and drafter {draft!r} use different tokenizers: {'; '.join(diffs)}. "
            "Speculative decoding needs the same tokenizer: pick a drafter of the same family "
            "(e.g. Qwen2.5-VL-7B for Qwen2.5-VL-32B, LLaVA-OneVision-7B for LLaVA-OneVision-72B) or draft_pretrained=self"
        )
