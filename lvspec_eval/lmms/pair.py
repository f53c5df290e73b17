"""Loading and placement of the target/drafter pair: checkpoint and tokenizer checks (before any
weights load), device maps, Self-SD (`draft_pretrained=self`: the target is its own drafter).

No lmms-eval import: the testbed sweep loads its pair here too."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Optional

import torch
from loguru import logger

from lvspec_eval.adapters.base import HFAdapter
from lvspec_eval.adapters.loading import (DeviceMap, check_checkpoint, check_same_tokenizer, default_device_map,
                                          is_map_file, load_tokenizer, resolve_device_map)
from lvspec_eval.config import LVSpecArgs


def loads_drafter(args: LVSpecArgs) -> bool:
    """A second checkpoint is loaded for drafting (not for `ar`, not for Self-SD)."""
    return args.method != "ar" and args.draft_pretrained != "self"


def check_checkpoints(args: LVSpecArgs) -> None:
    """Refuse a target or drafter checkpoint that cannot be found, naming the fix."""
    check_checkpoint(args.pretrained, "target")
    if loads_drafter(args):
        check_checkpoint(args.draft_pretrained, "drafter")


def device_maps(args: LVSpecArgs, *, device: Optional[str] = None, world_size: int = 1,
                local_rank: int = 0) -> tuple[DeviceMap, DeviceMap]:
    """The target's and the drafter's `from_pretrained` device maps for this process (a map file
    is read and checked here). Data parallel without a device map: one device per process;
    `device="cpu"` (lmms-eval's --device) without one: the CPU."""
    device_map = args.device_map
    if world_size > 1 and device_map is None:  # data parallel: one device per process
        device_map = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device_map is None and device == "cpu":
        device_map = "cpu"
    device_map = default_device_map(device_map)
    draft_map = args.draft_device_map or (default_device_map(None) if is_map_file(device_map) else device_map)
    return (resolve_device_map(device_map, "target", args.offload_folder),
            resolve_device_map(draft_map, "drafter", args.offload_folder))


def check_tokenizers(args: LVSpecArgs) -> None:
    """Refuse a drafter whose tokenizer differs from the target's (their token ids would not agree)."""
    if loads_drafter(args):
        check_same_tokenizer(load_tokenizer(args.pretrained, "target"), load_tokenizer(args.draft_pretrained, "drafter"),
                             args.pretrained, args.draft_pretrained)


def load_pair(args: LVSpecArgs, adapter_class: type[HFAdapter], target_map: DeviceMap,
              draft_map: DeviceMap, *, dtype: str) -> tuple[HFAdapter, Optional[HFAdapter]]:
    """(target, drafter) adapters in `dtype` (the args' dtype, or the family's built-in default when they
    give none); the drafter is None for `ar` and the target itself for Self-SD."""
    load = dict(dtype=dtype, attn_implementation=args.attn_implementation,
                max_num_frames=args.max_num_frames, fps=args.fps, min_pixels=args.min_pixels,
                max_pixels=args.max_pixels)
    offload = (lambda role: str(Path(args.offload_folder) / role)) if args.offload_folder else (lambda role: None)
    target = adapter_class.load(args.pretrained, device_map=target_map, offload_folder=offload("target"), **load)
    draft: Optional[HFAdapter] = None
    if args.method != "ar":
        if args.draft_pretrained == "self":
            draft = target
        else:
            draft = adapter_class.load(args.draft_pretrained, device_map=draft_map, offload_folder=offload("drafter"),
                                       **load)
    for role, adapter in (("target", target), ("drafter", draft)):
        placement = getattr(adapter.model, "hf_device_map", None) if adapter is not None else None
        if placement:  # the map as transformers applied it, and where the weights are now
            where = collections.Counter(str(p.device) for p in adapter.model.parameters())
            logger.info(f"lvspec: {role} placement: {placement}; parameter tensors by device: {dict(where)} "
                        "(meta: offloaded, loaded by accelerate hooks per forward)")
    return target, draft
