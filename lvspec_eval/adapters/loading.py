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
