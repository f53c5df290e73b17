"""The decoding loop: prefill -> draft K -> verify in one target pass -> rule -> commit/crop.

`decode` runs every method. With no drafter (`ar`) each round drafts nothing and the verify
forward over [last] is a plain greedy step, so the baseline runs through the same adapters,
the same loop and the same timers as the speculative methods.

Per round exactly one target forward and K drafter forwards (fewer only when the drafter
proposes EOS, or when fewer than K+1 tokens remain to max_new_tokens; none before the drafter
starts, which the method's `DraftSchedule` may hold back on a short-answer request). Drafter steps
compute the output layer at their last position only (`Session.extend(last_only=True)`); both caches
are allocated for the prompt + max_new_tokens + K + 1 tokens at prefill and never regrow.

Stops (`StopCondition`): EOS, `max_new_tokens` and the `until` strings of `cfg` are checked on
every emitted token, also inside a round; the round's tokens after the stopping one are never
emitted or counted, so a lossless method ends on the same token as `ar`. EOS and the special
tokens of `cfg.special_ids` are verified strictly under every rule (`acceptance.judge_round`).

One provenance code and one anchor flag per emitted token (P T E L S C B; a f -): their meanings
and the decoding terms (round, exact, loose, shift, correction, bonus) are in `lvspec_eval.glossary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from lvspec_eval.acceptance import EXACT, LOOSE, SHIFT, AcceptanceRule, RoundView, accepted_length, judge_round
from lvspec_eval.adapters.base import HFAdapter, Prefill, Session
from lvspec_eval.config import DecodeConfig
from lvspec_eval.detokenize import Decode
from lvspec_eval.engine.processors import bind, processed
from lvspec_eval.engine.schedule import DraftSchedule, FixedSchedule
from lvspec_eval.engine.stopping import StopCondition
from lvspec_eval.metrics.timing import Stopwatch
from lvspec_eval.pruning import VideoPruning
from lvspec_eval.relevance import RelevanceRepr

_CODE = {EXACT: "E", LOOSE: "L", SHIFT: "S"}


@dataclass
class DecodeResult:
    tokens: list[int] = field(default_factory=list)  # emitted token ids (EOS included when hit)
    provenance: str = ""  # one code per emitted token
    anchor_flags: str = ""  # one flag per emitted token
    rounds: int = 0  # target verification forwards after prefill
    proposed: int = 0  # draft tokens proposed
    accepted_exact: int = 0
    accepted_loose: int = 0
    accepted_shift: int = 0
    accepted_per_position: list[int] = field(default_factory=list)  # [K] accepted count per draft position
    per_step_drafted: list[int] = field(default_factory=list)  # [rounds] draft tokens proposed in each round
    per_step_accepted: list[int] = field(default_factory=list)  # [rounds] draft tokens accepted in each round
    prefill_s: float = 0.0  # target prefill + drafter start (its prefill, the pruning's ranking, the anchor finder)
    decode_s: float = 0.0  # the loop after prefill, a late drafter start excluded
    draft_prefill_s: float = 0.0  # the drafter start's share of prefill_s (0 when the drafter never started)
    stop_reason: str = ""  # eos | until | max_new_tokens
    draft_forward_s: float = 0.0  # only with profile=True: decode-time spent inside drafter forwards
    target_forward_s: float = 0.0  # only with profile=True: decode-time spent inside target forwards (probes excluded)
    probe_s: float = 0.0  # only with profile=True: decode-time spent in the target's video-attention probes
    video_tokens: Optional[int] = None  # video tokens in the target's prompt (None: no video)
    draft_video_tokens: Optional[int] = None  # video tokens the drafter prefilled on (< video_tokens when pruned)

    @property
    def accepted(self) -> int:
        return self.accepted_exact + self.accepted_loose + self.accepted_shift


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """argmax over the last dim (first index on ties, like torch.argmax); [..., V] -> [...] on CPU.

    On CPU numpy's argmax is ~9x faster than torch's over a 152k vocabulary (measured by
    benchmarks/overhead_memory.py), which matters for the engine's overhead per round."""
    if logits.device.type == "cpu":
        array = (logits if logits.dtype in (torch.float32, torch.float64) else logits.float()).numpy()
        return torch.from_numpy(np.asarray(array.argmax(-1)))
    return logits.argmax(-1).cpu()


def greedy_id(row: torch.Tensor) -> int:
    """argmax of one row of logits [V] as a Python int (first index on ties): a drafter step's choice,
    without the tensor round trip of `greedy`."""
    if row.device.type == "cpu":
        return int((row if row.dtype in (torch.float32, torch.float64) else row.float()).numpy().argmax())
    return int(row.argmax())


AnchorFactory = Callable[[Prefill, Session], Any]  # returns an AnchorFinder


def start_drafter(draft: HFAdapter, inputs: dict[str, Any], reserve: int, t_pre: Prefill, t_sess: Session,
                  pruning: Optional[VideoPruning], anchor_factory: Optional[AnchorFactory],
                  video_attention_layer: Optional[int]) -> tuple[Session, Prefill, Any]:
    """Prefill the drafter on `inputs` (on the pruned video when `pruning`: its ranking is read from the
    target's prefill now) and make the anchor finder (None when `anchor_factory` is); with
    `video_attention_layer`, the target's later forwards probe their attention share on the video.
    Returns (drafter session, drafter prefill, finder)."""
    if pruning is not None:
        inputs = pruning.draft_inputs(inputs, t_pre)
    d_sess, d_pre = draft.start(inputs, reserve=reserve)
    finder = anchor_factory(t_pre, t_sess) if anchor_factory is not None else None
    if finder is not None and video_attention_layer is not None:
        video_rows = torch.nonzero(~t_pre.text_mask).view(-1)
        if video_rows.numel():
            t_sess.video_probe = (video_attention_layer, video_rows)
    return d_sess, d_pre, finder


@torch.inference_mode()  # the engine's own small tensor ops skip autograd bookkeeping too
def decode(
    target: HFAdapter,
    target_inputs: dict[str, Any],
    cfg: DecodeConfig,
    *,
    draft: Optional[HFAdapter] = None,
    pruning: Optional[VideoPruning] = None,
    rule: Optional[AcceptanceRule] = None,
    schedule: Optional[DraftSchedule] = None,
    anchor_factory: Optional[AnchorFactory] = None,
    capture_layer: Optional[int] = None,
    video_attention_layer: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    detokenize: Optional[Decode] = None,
    profile: bool = False,
) -> DecodeResult:
    """Greedy decoding of `target`, speculative when `draft` and `rule` are given (callers decode
    through `lvspec_eval.engine.methods.Method.decode`, which passes a method's parts here).

    The drafter reads the target's `target_inputs` (a pair shares one processor and vocabulary; with
    `pruning`, its pruned video is cut from them).
    schedule: when the drafter starts (`engine.schedule`; None: the paper's `FixedSchedule`, at prefill).
    A drafter that starts late is prefilled inside the loop; its prefill time counts in `prefill_s`.
    detokenize(ids) -> text: the answer's text, searched for `cfg.until` (needed only with until strings).
    video_attention_layer: probe the target's attention share on the video at this decoder layer in
    every verify forward (for relevance_repr=attention).
    pruning: the drafter prefills on a pruned video, chosen from the target's prefill attention
    (SpecVLM, Self-SD); the target's own decoding is unchanged."""
    speculative = draft is not None
    if speculative and rule is None:
        raise ValueError("a drafter needs an acceptance rule")
    k_max = cfg.num_draft_tokens if speculative else 0
    solo = (schedule or FixedSchedule()).solo_tokens(cfg.max_new_tokens) if speculative else 0
    reserve = cfg.max_new_tokens + k_max + 1  # cache room beyond the prompt: the caches never regrow
    eos = set(cfg.eos_ids)
    stop = StopCondition(cfg.max_new_tokens, cfg.eos_ids, cfg.until, detokenize)
    special_ids = torch.tensor(sorted(eos | set(cfg.special_ids)), dtype=torch.long)  # [S]
    res = DecodeResult(accepted_per_position=[0] * k_max)
    watch = Stopwatch(device=target.input_device)
    prune = pruning if speculative else None
    factory = anchor_factory if speculative and rule.needs_anchors else None

    # 1. Prefill: the target reads the prompt; its choice is token 1. The drafter starts now, or (schedule)
    #    once the target alone has emitted `solo` tokens and the answer goes on (step 2).
    watch.start()
    t_sess, t_pre = target.start(target_inputs, capture_layer=capture_layer, reserve=reserve,
                                 **({"attention_layer": prune.layer} if prune is not None else {}))
    res.video_tokens = t_pre.video_tokens_fed if t_pre.video_coords is not None else None
    t_proc = bind(cfg.processing, t_pre.prompt_ids, cfg.max_new_tokens)  # generate's logits processors (None: none)
    last = int(greedy(processed(t_proc, t_pre.logits.view(1, -1), ())[0]))
    tokens, prov, flags = res.tokens, [], []
    tokens.append(last)
    prov.append("P")
    flags.append("-")
    pending = [last]  # accepted tokens not yet fed to the drafter
    res.stop_reason = stop.push(last)
    d_sess, d_pre, finder, d_proc = None, None, None, None
    drafter_watch = Stopwatch(device=target.input_device)
    if speculative and solo <= 1 and not res.stop_reason:
        drafter_watch.start()
        d_sess, d_pre, finder = start_drafter(draft, target_inputs, reserve, t_pre, t_sess, prune, factory,
                                              video_attention_layer)
        d_sess.profile = profile
        d_proc = bind(cfg.processing, d_pre.prompt_ids if d_pre is not None else None, cfg.max_new_tokens)
        res.draft_prefill_s = drafter_watch.stop()
    res.prefill_s = watch.stop()
    t_sess.profile = profile
    vocab = min(t_sess.vocab_size, draft.vocab_size) if speculative else t_sess.vocab_size
    late_start_s = 0.0  # a drafter started inside the loop (moved from decode_s to prefill_s)

    watch.start()
    while not res.stop_reason:
        # 2. Draft: K greedy drafter steps; the first one also feeds the pending accepted tokens. A drafter
        #    held back by the schedule starts once `solo` tokens are out; until then a round drafts nothing.
        if speculative and d_sess is None and len(tokens) >= solo:
            drafter_watch.start()
            d_sess, d_pre, finder = start_drafter(draft, target_inputs, reserve, t_pre, t_sess, prune, factory,
                                                  video_attention_layer)
            d_sess.profile = profile
            d_proc = bind(cfg.processing, d_pre.prompt_ids if d_pre is not None else None, cfg.max_new_tokens)
            late_start_s = res.draft_prefill_s = drafter_watch.stop()
        k = min(k_max, cfg.max_new_tokens - len(tokens) - 1) if d_sess is not None else 0
        draft_ids: list[int] = []
        if k > 0:
            feed = pending
            for _ in range(k):
                logits = d_sess.extend(torch.tensor(feed), last_only=True)  # [1, V_d], last position only
                if d_proc is not None:
                    logits = processed(d_proc, logits, tokens, draft_ids)
                nxt = greedy_id(logits[0, :vocab])
                draft_ids.append(nxt)
                feed = [nxt]
                if nxt in eos:
                    break
        k = len(draft_ids)

        # 3. Verify: one target forward over [last, d_1..d_K] gives t_1..t_{K+1}.
        block = torch.tensor([last] + draft_ids)
        target_logits = processed(t_proc, t_sess.extend(block), tokens, draft_ids)[:, :vocab]  # [K+1, V]
        target_ids = greedy(target_logits)  # [K+1]

        # 4. Walk: the rule's verdicts, the accepted prefix, and the correction or bonus t_{n+1}.
        n, verdicts, anchors, scores = 0, None, None, None
        if k > 0:
            d = torch.tensor(draft_ids)
            if finder is not None:
                signal = t_sess.last_video_attention if finder.repr_kind is RelevanceRepr.ATTENTION else t_sess.last_hidden
                anchors, scores = finder.round(d, target_ids, signal, target_logits)
            view = RoundView(d, target_ids, target_logits, anchors=anchors, generator=generator,
                             special_ids=special_ids)
            verdicts = judge_round(rule, view)  # the rule's verdicts, EOS and special tokens strict
            n = accepted_length(verdicts)
        res.rounds += 1
        res.proposed += k
        res.per_step_drafted.append(k)
        res.per_step_accepted.append(0)
        emitted = draft_ids[:n] + [int(target_ids[n])]
        codes = [_CODE[int(v)] for v in verdicts[:n]] if n else []
        codes.append("T" if k == 0 else ("B" if n == k else "C"))  # k == 0: nothing drafted, a plain step
        for i, (tok, code) in enumerate(zip(emitted, codes)):  # one token at a time, as plain greedy decoding
            tokens.append(tok)
            prov.append(code)
            flags.append("-" if anchors is None or i >= k else ("a" if anchors[i] else "f"))
            if i < n:
                res.accepted_per_position[i] += 1
                res.per_step_accepted[-1] += 1
                if code == "E":
                    res.accepted_exact += 1
                elif code == "L":
                    res.accepted_loose += 1
                else:
                    res.accepted_shift += 1
            res.stop_reason = stop.push(tok)
            if res.stop_reason:  # the round's later tokens are never emitted
                break
        if res.stop_reason:
            break
        if finder is not None and scores is not None and n:
            finder.commit(scores[:n])

        # 5. Commit: crop both caches to the accepted prefix; the last emitted token is `last`.
        t_sess.crop(t_sess.length - (k + 1) + 1 + n)
        if speculative:
            if k == 0:  # nothing drafted (drafter not started yet, or no budget left): the drafter sees it later
                pending = pending + [emitted[-1]]
            else:
                fed = len(pending) + k - 1  # tokens the drafter consumed this round
                keep_drafts = min(n, k - 1)
                d_sess.crop(d_sess.length - fed + len(pending) + keep_drafts)
                pending = draft_ids[keep_drafts:n] + [emitted[-1]]
        last = tokens[-1]
    res.decode_s = watch.stop() - late_start_s
    res.prefill_s += late_start_s
    if d_sess is not None and d_pre is not None and res.video_tokens is not None:
        res.draft_video_tokens = d_pre.video_tokens_fed
    if profile:
        res.target_forward_s = t_sess.forward_s
        res.draft_forward_s = d_sess.forward_s if d_sess is not None else 0.0
        res.probe_s = t_sess.probe_s
    res.provenance = "".join(prov)
    res.anchor_flags = "".join(flags)
    t_sess.close()
    if d_sess is not None:
        d_sess.close()
    return res
