"""The trained testbed pairs as ordinary HF checkpoint folders, materialised on first use.

Git stores each model compactly (``testbed/weights/<role>/``: reduced-vocabulary
float32 safetensors + ``testbed.json`` with the architecture and the real ids of its rows).
Roles: ``target`` / ``drafter`` (Qwen2.5-VL), ``llava_target`` / ``llava_drafter``
(LLaVA-OneVision) and ``qwen3_target`` / ``qwen3_drafter`` (Qwen3-VL, 151,936 rows). :func:`checkpoint` expands a role to its full vocabulary (Qwen2.5-VL: 151,936
rows; LLaVA-OneVision: 151,936 for the target and 152,064 for the drafter, whose embedding is
padded further, as the 0.5B / 7B / 72B checkpoints differ) and writes a complete
folder (config, weights, processor, tokenizer, chat template) under
``$LVSPEC_CACHE/testbed/checkpoints/<role>-<digest>/`` (default ``~/.cache/lvspec_eval``), once:
later calls return the folder at once. The folder loads by path like any hub checkpoint; the
backend has no special case for it.

    python -m testbed.checkpoints      # prints the folders (materialising them)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROLES = ("target", "drafter", "llava_target", "llava_drafter", "qwen3_target", "qwen3_drafter")
#: Full embedding rows per role (default: 151,936, Qwen2.5-VL's and LLaVA-OneVision-0.5B's).
VOCAB_ROWS = {"llava_drafter": 152064}


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
    from testbed.train import cache_root

    if role not in ROLES:
        raise ValueError(f"unknown testbed role {role!r}; use one of {ROLES}")
    source = Path(source) if source is not None else weights_dir(role)
    if not (source / "model.safetensors").is_file() or not (source / "testbed.json").is_file():
        raise FileNotFoundError(
            f"{source} holds no trained testbed {role} (model.safetensors + testbed.json); "
            "retrain with `make testbed` (python -m testbed.train --role all) or, for the "
            "LLaVA-OneVision pair, `make testbed-llava` (--role llava_ov), for the Qwen3-VL pair "
            "`make testbed-qwen3` (--role qwen3_vl)"
        )
    root = Path(cache) if cache is not None else cache_root() / "checkpoints"
    out = root / f"{role}-{_digest(source)}"
    if (out / "config.json").is_file() and any(out.glob(".lvspec_tiny_complete")):
        return out
    return _materialise(source, out)


def _materialise(source: Path, out: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    from testbed.families import family, tied_embeddings
    from testbed.train import RoleSpec
    from testbed.vocab import VocabMap, expand_embedding

    info = json.loads((source / "testbed.json").read_text())
    spec = RoleSpec.from_record(info["spec"])
    fam = family(spec.family)
    vmap = VocabMap(info["real_ids"])
    config = fam.config(spec, VOCAB_ROWS.get(info["role"], 151936), None)
    state = load_file(str(source / "model.safetensors"))
    for key in fam.embedding_keys(state):
        state[key] = expand_embedding(state[key], vmap, config.get_text_config().vocab_size)
    torch.manual_seed(0)  # initialisation is overwritten; seeded anyway
    model = fam.model_class()(config)
    result = model.load_state_dict(state, strict=False)
    tied = tied_embeddings(config)
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"testbed weights in {source} do not fit the architecture: missing {missing[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    if tied:
        model.tie_weights()
    meta = {"testbed_role": info["role"], "family": fam.name, "source_digest": out.name.rsplit("-", 1)[-1],
            "stop_reason": info["stop_reason"]}
    return fam.save(model.eval(), out, meta)


def main() -> None:
    for role in ROLES:
        if (weights_dir(role) / "testbed.json").is_file():
            print(f"{role}: {checkpoint(role)}")
        else:
            print(f"{role}: not trained (no {weights_dir(role)})")


if __name__ == "__main__":
    sys.exit(main())
