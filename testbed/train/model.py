"""The model a role trains (the family's real model class on the reduced vocabulary) and its loss."""

from __future__ import annotations

from typing import Any

from testbed.families import family
from testbed.train.roles import RoleSpec


def build_model(spec: RoleSpec, vmap: Any, tokenizer: Any) -> Any:
    """The role's model, float32, on the reduced vocabulary ``vmap`` (special ids mapped into it), drawn
    after ``torch.manual_seed(spec.seed)`` (the global RNG: training's first draw)."""
    import torch

    fam = family(spec.family)
    ids = {k: int(vmap.reduce([v])[0]) for k, v in fam.special_ids(tokenizer).items()}
    torch.manual_seed(spec.seed)
    return fam.model_class()(fam.config(spec, vmap.size, ids)).float()


def weighted_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Next-token cross-entropy weighted by ``batch["weights"]`` (popped): 0 on the prompt, 3 on anchors."""
    import torch.nn.functional as F

    weights = batch.pop("weights")
    logits = model(**batch, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    w = weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (ce * w.reshape(-1)).sum() / w.sum()
