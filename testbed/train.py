"""Train the testbed's tiny target or drafter (Qwen2.5-VL, LLaVA-OneVision or Qwen3-VL) from scratch (CPU).

    python -m testbed.train --role target     # or drafter; `--role all` (`make testbed`): both
    python -m testbed.train --role llava_ov   # the LLaVA-OneVision pair (`make testbed-llava`)
    python -m testbed.train --role qwen3_vl   # the Qwen3-VL pair (`make testbed-qwen3`)

Data: seeded clips (``clips.py``) rendered, H.264 round-tripped (the pixels evaluation sees) and
turned into ``pixel_values_videos`` by the family's real video processor, cached once in
``$LVSPEC_CACHE/testbed/data-*``. Each training example is one of: a caption (the role's filler
style), the short attribute list, or a multiple-choice question; anchor tokens weigh 3x in the loss.
The model is the real ``Qwen2_5_VLForConditionalGeneration`` / ``LlavaOnevisionForConditionalGeneration`` /
``Qwen3VLForConditionalGeneration`` on a reduced vocabulary (``vocab.py``); what differs between the families is in ``families.py``.

Stopping is by a validation check, not a step count: every ``--eval-every`` steps the model
captions and answers MCQs greedily on held-out validation clips; training stops at the first
check that passes the role's bar (the target: a strong model; the drafter: an *early* checkpoint,
weakened on purpose so that it errs on anchors), or at ``--max-minutes`` (then the best check is kept).
The outcome, the reason for stopping and every check are written beside the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed import clips
from testbed import grammar as g
from testbed.families import family, tied_embeddings

DATA_FORMAT = 2  # bump when clips.render changes
ANCHOR_WEIGHT = 3.0
#: Relative share of MCQ training questions per attribute: motion, learned last, is asked twice as often.
MCQ_SHARE = {"motion": 2.0}


@dataclass
class RoleSpec:
    hidden: int
    layers: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    lr: float
    style: str
    # validation bar that stops training
    stop_f1: float
    stop_min_attr: float
    stop_mcq: float
    max_minutes: float
    seed: int
    family: str = "qwen2_5_vl"
    # vision pre-training: phases of (attributes, steps), each training the vision tower + projector
    # alone with throw-away linear heads predicting those attributes from the pooled video features
    # (as real VLMs start from a trained vision encoder); then the warm-up: the first `warmup_steps`
    # steps of the whole model train only MCQ questions on `warmup_attribute`
    vision_pretrain: tuple[tuple[tuple[str, ...], int], ...] = ()
    # learning rate of the vision tower + projector relative to `lr` after pre-training (3x in it)
    vision_lr_scale: float = 3.0
    warmup_attribute: str | None = None
    warmup_steps: int = 0

    @classmethod
    def from_record(cls, spec: dict[str, Any]) -> "RoleSpec":
        """The spec stored in a ``testbed.json``; records written before pre-training had phases
        (``vision_pretrain_steps`` + one attribute tuple) are read as one phase."""
        spec = dict(spec)
        steps = spec.pop("vision_pretrain_steps", None)
        phases = spec.get("vision_pretrain") or ()
        if steps is not None:
            phases = ((tuple(phases), steps),) if steps else ()
        spec["vision_pretrain"] = tuple((tuple(attrs), int(n)) for attrs, n in phases)
        return cls(**spec)


ROLES: dict[str, RoleSpec] = {
    # 256 wide (the full-vocabulary output layer sets the decode cost, hence c), only 2 layers (training
    # cost on 2 CPU cores; a 96x2 model learned every attribute in minutes per testbed.md), vision 64x2
    "target": RoleSpec(hidden=256, layers=2, intermediate=512, vision_hidden=64, vision_depth=2, lr=1.5e-3,
                       style="target", stop_f1=0.97, stop_min_attr=0.92, stop_mcq=0.95, max_minutes=50, seed=1,
                       vision_pretrain=((("motion",), 150), (("motion", "count", "shape"), 300)), vision_lr_scale=1.0,
                       warmup_attribute="motion", warmup_steps=200),
    # 64x1 text / 32x1 vision: ~4x cheaper per step; stopped early (F1 >= 0.72) so it misses details
    "drafter": RoleSpec(hidden=64, layers=1, intermediate=256, vision_hidden=32, vision_depth=1, lr=3e-3,
                        style="drafter", stop_f1=0.72, stop_min_attr=0.0, stop_mcq=0.0, max_minutes=60, seed=2),
    # The LLaVA-OneVision pair (issue: a second family beside the Qwen one; no quality bars of its own):
    # same widths, shorter budgets (no quality bars). Its target's tower is pre-trained on shape and count
    # (trained through the language model alone, after 45 min it saw shape no better than its drafter);
    # SigLIP sees single frames, so motion is left to the language model.
    "llava_target": RoleSpec(hidden=256, layers=2, intermediate=512, vision_hidden=64, vision_depth=2, lr=1.5e-3,
                             style="target", stop_f1=0.95, stop_min_attr=0.85, stop_mcq=0.90, max_minutes=30, seed=3,
                             family="llava_onevision", vision_pretrain=((("shape", "count"), 300),)),
    "llava_drafter": RoleSpec(hidden=64, layers=1, intermediate=256, vision_hidden=32, vision_depth=1, lr=3e-3,
                              style="drafter", stop_f1=0.72, stop_min_attr=0.0, stop_mcq=0.0, max_minutes=20, seed=4,
                              family="llava_onevision"),
    # The Qwen3-VL pair (issue 15): the Qwen2.5-VL pair's widths, bars, budgets and vision pre-training
    # (patch 16: the objects still move more than one patch per frame); the target's tower gets a DeepStack
    # merger after its first block, the drafter's single block feeds both the merger and DeepStack.
    "qwen3_target": RoleSpec(hidden=256, layers=2, intermediate=512, vision_hidden=64, vision_depth=2, lr=1.5e-3,
                             style="target", stop_f1=0.97, stop_min_attr=0.92, stop_mcq=0.95, max_minutes=50, seed=5,
                             family="qwen3_vl", vision_pretrain=((("motion",), 150), (("motion", "count", "shape"), 300)),
                             vision_lr_scale=1.0, warmup_attribute="motion", warmup_steps=200),
    "qwen3_drafter": RoleSpec(hidden=64, layers=1, intermediate=256, vision_hidden=32, vision_depth=1, lr=3e-3,
                              style="drafter", stop_f1=0.72, stop_min_attr=0.0, stop_mcq=0.0, max_minutes=60, seed=6,
                              family="qwen3_vl"),
}
#: ``--role`` groups: trained side by side, one thread each.
PAIRS: dict[str, tuple[str, ...]] = {"all": ("target", "drafter"), "llava_ov": ("llava_target", "llava_drafter"),
                                     "qwen3_vl": ("qwen3_target", "qwen3_drafter")}


def cache_root() -> Path:
    from testbed.fixtures.tiny import default_cache_root

    return default_cache_root() / "testbed"


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _encode_clips(seeds: list[int], fam: Any) -> Any:
    import numpy as np

    proc = fam.processor()
    out = np.empty((len(seeds), *fam.pixel_shape), dtype=np.float16)
    for i, seed in enumerate(seeds):
        out[i] = fam.encode(clips.roundtrip(clips.render(seed)[0]), proc).astype(np.float16)
    return out


def clip_tensor_file(split: str, n: int, family_name: str = "qwen2_5_vl") -> Path:
    """The video tensors of the first ``n`` clips of ``split`` as a cached float16 memmap (built once)."""

    fam = family(family_name)
    path = cache_root() / f"data-v{DATA_FORMAT}" / f"{fam.cache_prefix}{split}-{n}.f16"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    seeds = clips.split_seeds(split, n)
    print(f"[testbed] encoding {n} {split} clips -> {path}", flush=True)
    t0 = time.time()
    arr = _encode_clips(seeds, fam)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    arr.tofile(tmp)
    os.replace(tmp, path)
    print(f"[testbed] encoded {n} clips in {time.time() - t0:.0f} s", flush=True)
    return path


def load_clip_tensors(split: str, n: int, family_name: str = "qwen2_5_vl") -> Any:
    import numpy as np

    return np.memmap(clip_tensor_file(split, n, family_name), dtype=np.float16, mode="r",
                     shape=(n, *family(family_name).pixel_shape))


class Examples:
    """Builds token sequences (reduced ids) with loss weights for the three kinds of example."""

    def __init__(self, tokenizer: Any, vmap: Any, family_name: str = "qwen2_5_vl"):
        self.tok = tokenizer
        self.vmap = vmap
        self.family = family(family_name)
        self._head, self._tail = self.family.chat_scaffold(tokenizer)
        self._prompts: dict[str, list[int]] = {}
        self.im_end = vmap.reduce([tokenizer.convert_tokens_to_ids("<|im_end|>")])[0]
        self.video_id = vmap.reduce([tokenizer.convert_tokens_to_ids(self.family.video_token)])[0]

    def prompt(self, question: str) -> list[int]:
        if question not in self._prompts:
            ids = self.tok(self._head + question + self._tail, add_special_tokens=False)["input_ids"]
            self._prompts[question] = self.vmap.reduce(ids).tolist()
        return self._prompts[question]

    def answer(self, text: str, anchors: bool) -> tuple[list[int], list[float]]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = self.vmap.reduce(enc["input_ids"]).tolist()
        weights = [1.0] * len(ids)
        if anchors:
            spans = g.anchor_char_spans(text)
            for i, (a, b) in enumerate(enc["offset_mapping"]):
                if any(a < e and s < b for s, e in spans):
                    weights[i] = ANCHOR_WEIGHT
        return ids + [int(self.im_end)], weights + [1.0]

    def sample(self, attrs: g.Attributes, rng: random.Random, style: str,
               only: str | None = None) -> tuple[list[int], list[float]]:
        """(sequence, weights) with weight 0 on the prompt; ``only``: an MCQ question on that attribute."""
        kind = "mcq" if only else rng.choices(("caption", "list", "mcq"), weights=(0.45, 0.25, 0.30))[0]
        if kind == "caption":
            prompt, (ans, w) = self.prompt(g.CAPTION_PROMPT), self.answer(g.caption(attrs, rng, style), True)
        elif kind == "list":
            prompt, (ans, w) = self.prompt(g.LIST_PROMPT), self.answer(g.attribute_list(attrs), True)
        else:
            attribute = only or rng.choices(list(g.ATTRIBUTES), weights=[MCQ_SHARE.get(a, 1.0) for a in g.ATTRIBUTES])[0]
            prompt = self.prompt(g.mcq_prompt(attribute))
            ans, w = self.answer(g.mcq_answer(attrs, attribute), False)
            w = [ANCHOR_WEIGHT] + w[1:]
        return prompt + ans, [0.0] * len(prompt) + w


def collate(seqs: list[tuple[list[int], list[float]]], pixels: Any, video_id: int,
            family_name: str = "qwen2_5_vl", device: Any = "cpu") -> dict[str, Any]:
    import torch

    n = max(len(s) for s, _ in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)  # pad with the sink (masked out)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    weights = torch.zeros(len(seqs), n)
    for i, (s, w) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        weights[i, : len(w)] = torch.tensor(w)
    fam = family(family_name)
    batch = {"input_ids": ids, "attention_mask": mask, **fam.token_type_inputs(ids, video_id),
             **fam.batch_inputs(pixels, len(seqs)), "weights": weights}
    return {k: v.to(device) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def build_model(spec: RoleSpec, vmap: Any, tokenizer: Any) -> Any:
    import torch

    fam = family(spec.family)
    ids = {k: int(vmap.reduce([v])[0]) for k, v in fam.special_ids(tokenizer).items()}
    torch.manual_seed(spec.seed)
    return fam.model_class()(fam.config(spec, vmap.size, ids)).float()


def pretrain_vision(model: Any, spec: RoleSpec, pixels: Any, attrs: list[g.Attributes], rng: random.Random,
                    batch: int, role: str) -> list[dict[str, Any]]:
    """Train the vision tower and projector alone, phase by phase (``spec.vision_pretrain``): linear
    heads on [mean, max] of the video features predict the phase's attributes (cross-entropy summed);
    the heads are discarded afterwards. For the Qwen target: motion, which the language model never
    learned to read from a vision tower trained only through it (a tower trained on motion alone
    separates moving / still in ~50 steps, five attributes at once did not in 200), comes first,
    then count and shape join it. Returns a log entry every 50 steps and at the end of each phase."""
    import torch
    import torch.nn.functional as F

    fam = family(spec.family)
    device = model.device
    vision = fam.vision_parameters(model)
    names = list(dict.fromkeys(a for phase, _ in spec.vision_pretrain for a in phase))
    labels = {a: torch.tensor([g.ATTRIBUTES[a].index(getattr(x, a)) for x in attrs], device=device) for a in names}
    heads: dict[str, Any] = {}
    opt = None
    log: list[dict[str, Any]] = []
    t0 = time.time()
    step = 0
    for phase, steps in spec.vision_pretrain:
        for i in range(1, steps + 1):
            step += 1
            idx = sorted(rng.randrange(len(attrs)) for _ in range(batch))
            inputs = {k: v.to(device) for k, v in fam.batch_inputs(pixels[idx], batch).items()}
            feats = fam.video_features(model, inputs)
            pooled = torch.cat([feats.mean(1), feats.amax(1)], -1)
            if opt is None:
                heads = {a: torch.nn.Linear(pooled.shape[-1], len(g.ATTRIBUTES[a])).to(device) for a in names}
                opt = torch.optim.AdamW(vision + [p for h in heads.values() for p in h.parameters()],
                                        lr=3 * spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
            logits = {a: heads[a](pooled) for a in phase}
            loss = sum(F.cross_entropy(logits[a], labels[a][idx]) for a in phase)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vision, 1.0)
            opt.step()
            if step % 50 == 0 or i == steps:
                acc = {a: round(float((logits[a].argmax(-1) == labels[a][idx]).float().mean()), 3) for a in phase}
                log.append({"step": step, "attributes": list(phase), "loss": round(loss.item(), 4),
                            "batch_accuracy": acc, "minutes": round((time.time() - t0) / 60, 2)})
                print(f"[{role}] vision pre-training step {step} loss {loss.item():.3f} batch accuracy "
                      + " ".join(f"{a[:3]} {v:.2f}" for a, v in acc.items()), flush=True)
    return log


def weighted_loss(model: Any, batch: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    weights = batch.pop("weights")
    logits = model(**batch, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    w = weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (ce * w.reshape(-1)).sum() / w.sum()


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def greedy_answer(model: Any, ex: Examples, question: str, pixels: Any, max_new_tokens: int) -> list[int]:
    import torch

    prompt = ex.prompt(question)
    batch = collate([(prompt, [0.0] * len(prompt))], pixels[None], int(ex.video_id), ex.family.name, model.device)
    batch.pop("weights")
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=int(ex.im_end),
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


def validate(model: Any, ex: Examples, vmap: Any, pixels: Any, seeds: list[int]) -> dict[str, Any]:
    """Greedy captions and MCQ answers on validation clips -> anchor_f1, attr_*, mcq accuracy."""
    model.eval()
    scores: dict[str, list[float]] = {}
    mcq = []
    for i, seed in enumerate(seeds):
        attrs = clips.clip_attributes(seed)
        ids = greedy_answer(model, ex, g.CAPTION_PROMPT, pixels[i], 80)
        text = ex.tok.decode([vmap.real(t) for t in ids if t != ex.im_end and t > 0])
        for k, v in g.score_caption(text, attrs).items():
            scores.setdefault(k, []).append(v)
        attribute = list(g.ATTRIBUTES)[i % len(g.ATTRIBUTES)]
        ans = greedy_answer(model, ex, g.mcq_prompt(attribute), pixels[i], 3)
        letter = g.parse_mcq(ex.tok.decode([vmap.real(t) for t in ans if t != ex.im_end and t > 0]))
        mcq.append(float(letter == g.mcq_answer(attrs, attribute)))
        scores.setdefault(f"mcq_{attribute}", []).append(mcq[-1])
    model.train()
    out = {k: sum(v) / len(v) for k, v in scores.items()}
    out["mcq"] = sum(mcq) / len(mcq)
    out["min_attr"] = min(out[f"attr_{a}"] for a in g.ATTRIBUTES)
    out["example"] = text
    return out


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def weights_dir(role: str) -> Path:
    return Path(__file__).resolve().parent / "weights" / role


def train(role: str, out: Path, n_train: int, n_val: int, batch: int, eval_every: int, max_minutes: float | None,
          threads: int, init_from: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from testbed.vocab import VocabMap, reduced_ids

    spec = ROLES[role]
    fam = family(spec.family)
    budget = spec.max_minutes if max_minutes is None else max_minutes
    torch.set_num_threads(threads)
    tok = fam.tokenizer()
    vmap = VocabMap(reduced_ids(tok, fam))
    ex = Examples(tok, vmap, fam.name)
    train_px = load_clip_tensors("train", n_train, fam.name)
    val_px = load_clip_tensors("val", n_val, fam.name)
    train_attrs = [clips.clip_attributes(s) for s in clips.split_seeds("train", n_train)]
    val_seeds = clips.split_seeds("val", n_val)

    model = build_model(spec, vmap, tok).train()
    previous: dict[str, Any] | None = None
    if init_from is not None:  # continue a run (fresh optimizer): its record is kept in testbed.json
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(init_from) / "model.safetensors")), strict=False)
        if tied_embeddings(model.config):
            model.tie_weights()
        previous = json.loads((Path(init_from) / "testbed.json").read_text())
        previous.pop("real_ids", None)
    model.to(device)
    vision = fam.vision_parameters(model)
    vision_ids = {id(p) for p in vision}
    text = [p for p in model.parameters() if id(p) not in vision_ids]
    opt = torch.optim.AdamW([{"params": text, "lr": spec.lr}, {"params": vision, "lr": spec.vision_lr_scale * spec.lr}],
                            weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    rng = random.Random(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    t0 = time.time()
    vision_log = pretrain_vision(model, spec, train_px, train_attrs, rng, batch, role) if spec.vision_pretrain else []
    step = 0
    reason = f"time budget of {budget:g} min reached; kept the best validation check"
    print(f"[{role}] {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params (reduced vocab {vmap.size}), "
          f"{n_train} train clips, {n_val} val clips, batch {batch}, {threads} thread(s)", flush=True)
    while True:
        idx = [rng.randrange(n_train) for _ in range(batch)]
        only = spec.warmup_attribute if step < spec.warmup_steps else None
        seqs = [ex.sample(train_attrs[i], rng, spec.style, only) for i in idx]
        loss = weighted_loss(model, collate(seqs, train_px[idx], int(ex.video_id), fam.name, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"loss diverged at step {step}")
        if step % eval_every:
            continue
        check = validate(model, ex, vmap, val_px, val_seeds)
        check.update(step=step, minutes=round((time.time() - t0) / 60, 2), loss=round(loss.item(), 4))
        history.append(check)
        print(f"[{role}] step {step} {check['minutes']:.1f} min loss {check['loss']:.3f} F1 {check['anchor_f1']:.3f} "
              + " ".join(f"{a[:3]} {check['attr_' + a]:.2f}" for a in g.ATTRIBUTES) + f" mcq {check['mcq']:.2f}"
              + (f" (mcq {spec.warmup_attribute} {check['mcq_' + spec.warmup_attribute]:.2f})" if spec.warmup_steps else ""),
              flush=True)
        key = check["anchor_f1"] + check["mcq"]
        passed = (check["anchor_f1"] >= spec.stop_f1 and check["min_attr"] >= spec.stop_min_attr
                  and check["mcq"] >= spec.stop_mcq)
        if best is None or key > best["key"] or passed:
            best = {"key": key, "check": check,
                    "state": {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}}
        if passed:
            reason = (f"validation check passed at step {step}: anchor_f1 {check['anchor_f1']:.3f} >= {spec.stop_f1}, "
                      f"min attribute {check['min_attr']:.2f} >= {spec.stop_min_attr}, mcq {check['mcq']:.2f} >= {spec.stop_mcq}")
            break
        if time.time() - t0 > budget * 60:
            break
    assert best is not None
    state = best["state"]
    if tied_embeddings(model.config):
        state.pop("lm_head.weight", None)  # tied to the embedding
    save_file(state, str(out / "model.safetensors"))
    info = {
        "role": role,
        "spec": asdict(spec),
        "real_ids": vmap.real_ids,
        "stop_reason": reason,
        "kept_check": {k: v for k, v in best["check"].items()},
        "train_minutes": round((time.time() - t0) / 60, 2),
        "threads": threads,
        "device": str(device),
        "n_train": n_train,
        "n_val": n_val,
        "batch": batch,
        "vision_pretraining": vision_log,
        "history": history,
        "torch": torch.__version__,
        "continued_from": previous,
    }
    (out / "testbed.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"[{role}] {reason}; wrote {out}", flush=True)
    return info


def train_all(a: argparse.Namespace) -> None:
    """Train every role in its own process (one thread each), streaming their progress lines."""
    import subprocess

    t0 = time.time()
    procs = []
    roles = PAIRS[a.role]
    for role in roles:
        cmd = [sys.executable, "-m", "testbed.train", "--role", role, "--train-clips", str(a.train_clips),
               "--val-clips", str(a.val_clips), "--batch", str(a.batch), "--eval-every", str(a.eval_every),
               "--threads", "1"]
        if a.out is not None:
            cmd += ["--out", str(Path(a.out) / role)]
        if a.max_minutes is not None:
            cmd += ["--max-minutes", str(a.max_minutes)]
        if a.device != "cpu":
            cmd += ["--device", a.device]
        procs.append((role, subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"))))
    failed = [role for role, p in procs if p.wait() != 0]
    if failed:
        raise SystemExit(f"training failed for {failed}")
    print(f"[testbed] trained {', '.join(roles)} in {(time.time() - t0) / 60:.1f} min", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=sorted(ROLES) + sorted(PAIRS), required=True,
                   help="a role, or a pair ('all': the Qwen2.5-VL pair, 'llava_ov': the LLaVA-OneVision pair, "
                        "'qwen3_vl': the Qwen3-VL pair): "
                        "encode the clips once, then train both roles side by side (one thread each)")
    p.add_argument("--out", type=Path, default=None, help="default: testbed/weights/<role>")
    p.add_argument("--train-clips", type=int, default=4000)
    p.add_argument("--val-clips", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--max-minutes", type=float, default=None, help="default: the role's budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu",
                   help="torch device for one role (e.g. cuda: minutes instead of an hour; the time budget and "
                        "the validation bars are the same, the weights are not bit-identical to a CPU run)")
    p.add_argument("--prepare-only", action="store_true", help="only encode the clip tensors (shared cache)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue from a trained folder (model.safetensors + testbed.json) instead of from scratch")
    a = p.parse_args(argv)
    if a.prepare_only or a.role in PAIRS:
        for name in sorted({ROLES[r].family for r in PAIRS.get(a.role, (a.role,))}):
            clip_tensor_file("train", a.train_clips, name)
            clip_tensor_file("val", a.val_clips, name)
        if a.prepare_only:
            return
    if a.role in PAIRS:
        return train_all(a)
    train(a.role, a.out or weights_dir(a.role), a.train_clips, a.val_clips, a.batch, a.eval_every, a.max_minutes,
          a.threads, a.init_from, a.device)


if __name__ == "__main__":
    sys.exit(main())
