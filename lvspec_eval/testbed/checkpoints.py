"""The trained testbed pair as ordinary Qwen2.5-VL checkpoint folders, materialised on first use.

Git stores each model compactly (``lvspec_eval/testbed/weights/<role>/``: reduced-vocabulary
float32 safetensors + ``testbed.json`` with the architecture and the real ids of its rows).
:func:`checkpoint` expands it to the full 151,936-row Qwen vocabulary and writes a complete
folder (config, weights, processor, tokenizer, chat template) under
``$LVSPEC_CACHE/testbed/checkpoints/<role>-<digest>/`` (default ``~/.cache/lvspec_eval``), once:
later calls return the folder at once. The folder loads by path like any hub checkpoint; the
backend has no special case for it.

    python -m lvspec_eval.testbed.checkpoints      # prints the two folders (materialising them)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROLES = ("target", "drafter")


def weights_dir(role: str) -> Path:
    return Path(__file__).resolve().parent / "weights" / role


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "testbed.json"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:12]


def checkpoint(role: str, source: Path | None = None, cache: Path | None = None) -> Path:
    """Path of the full checkpoint folder of ``role`` ("target" or "drafter"), built if missing.

    ``source`` is a folder with ``model.safetensors`` + ``testbed.json`` (default: the shipped
    weights); ``cache`` the parent of the materialised folders.
    """
    from lvspec_eval.testbed.train import cache_root

    if role not in ROLES:
        raise ValueError(f"unknown testbed role {role!r}; use one of {ROLES}")
    source = Path(source) if source is not None else weights_dir(role)
    if not (source / "model.safetensors").is_file() or not (source / "testbed.json").is_file():
        raise FileNotFoundError(
            f"{source} holds no trained testbed {role} (model.safetensors + testbed.json); "
            "retrain with `make testbed` (python -m lvspec_eval.testbed.train --role all)"
        )
    root = Path(cache) if cache is not None else cache_root() / "checkpoints"
    out = root / f"{role}-{_digest(source)}"
    if (out / "config.json").is_file() and any(out.glob(".lvspec_tiny_complete")):
        return out
    return _materialise(source, out)


def _materialise(source: Path, out: Path) -> Path:
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from lvspec_eval.testbed.vocab import FULL_VOCAB, VocabMap, expand_embedding
    from lvspec_eval.testing.tiny import save_qwen2_5_vl_checkpoint, tiny_qwen2_5_vl_config

    info = json.loads((source / "testbed.json").read_text())
    spec = info["spec"]
    vmap = VocabMap(info["real_ids"])
    config = tiny_qwen2_5_vl_config(hidden=spec["hidden"], layers=spec["layers"], vision_hidden=spec["vision_hidden"],
                                    vision_depth=spec["vision_depth"], vocab_size=FULL_VOCAB, init_std=0.02,
                                    intermediate=spec["intermediate"])
    state = load_file(str(source / "model.safetensors"))
    key = next(k for k in state if k.endswith("embed_tokens.weight"))
    state[key] = expand_embedding(state[key], vmap)
    torch.manual_seed(0)  # initialisation is overwritten; seeded anyway
    model = Qwen2_5_VLForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to the embedding
    if missing or result.unexpected_keys:
        raise RuntimeError(f"testbed weights in {source} do not fit the architecture: missing {missing[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    meta = {"testbed_role": info["role"], "source_digest": out.name.rsplit("-", 1)[-1],
            "stop_reason": info["stop_reason"]}
    return save_qwen2_5_vl_checkpoint(model.eval(), out, meta)


def main() -> None:
    for role in ROLES:
        print(f"{role}: {checkpoint(role)}")


if __name__ == "__main__":
    sys.exit(main())
