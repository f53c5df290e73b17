"""Write the testbed tasks' data: test and validation clips (mp4) and the doc files of the four tasks.

    python -m testbed.make_task [--n 200] [--n-val 60] [--out tasks/lvspec_testbed]

Deterministic: the same ``--n`` / ``--n-val`` always give the same docs and the same frames (the
committed folder was made with the defaults). Two splits, disjoint clip seeds (testbed/clips.py):

* test (reported on): the first ``--n`` clips of the test split -> ``caption.jsonl``, ``mcq.jsonl``
  (tasks ``lvspec_testbed_caption`` / ``lvspec_testbed_mcq``);
* validation (settings are chosen on it; docs/testbed.md): ``--n-val`` clips of the val split from
  index ``clips.VAL_TASK_START`` on, disjoint from the val clips the training's stop checks used ->
  ``caption_val.jsonl``, ``mcq_val.jsonl`` (tasks ``lvspec_testbed_caption_val`` /
  ``lvspec_testbed_mcq_val``, lmms-eval split ``validation``).

Docs:

* caption: one doc per clip, ``{"doc_id", "video", "seed", "attributes", "question"}``
  plus ``"answer"``, a reference caption in the target's style (for reading; the metric uses
  ``attributes``).
* mcq: one question per clip, the attribute cycling over the five, with the options
  listed in a fixed order per question type; ``"answer"`` is the letter.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from testbed import clips
from testbed import grammar as g

from testbed.paths import TESTBED_TASK_DIR as DEFAULT_OUT
DEFAULT_N = 200
DEFAULT_N_VAL = 60
#: split -> (caption doc file, mcq doc file)
DOC_FILES = {"test": ("caption.jsonl", "mcq.jsonl"), "val": ("caption_val.jsonl", "mcq_val.jsonl")}


def split_clip_seeds(split: str, n: int) -> list[int]:
    """The clip seeds of the tasks' ``split`` (test: the first n; val: n from clips.VAL_TASK_START on)."""
    if split not in DOC_FILES:
        raise ValueError(f"unknown task split {split!r}; use one of {list(DOC_FILES)}")
    return clips.split_seeds(split, n, start=clips.VAL_TASK_START if split == "val" else 0)


def docs(n: int = DEFAULT_N, split: str = "test") -> tuple[list[dict], list[dict]]:
    caption_docs, mcq_docs = [], []
    for i, seed in enumerate(split_clip_seeds(split, n)):
        attrs = clips.clip_attributes(seed)
        video = f"clip_{seed}.mp4"
        caption_docs.append({
            "doc_id": i, "video": video, "seed": seed, "attributes": attrs.as_dict(),
            "question": g.CAPTION_PROMPT, "answer": g.caption(attrs, random.Random(f"ref-{seed}"), "target"),
        })
        attribute = list(g.ATTRIBUTES)[i % len(g.ATTRIBUTES)]
        mcq_docs.append({
            "doc_id": i, "video": video, "seed": seed, "attributes": attrs.as_dict(), "attribute": attribute,
            "question": g.mcq_prompt(attribute), "options": g.mcq_options(attribute),
            "answer": g.mcq_answer(attrs, attribute),
        })
    return caption_docs, mcq_docs


def write(out: Path, n: int = DEFAULT_N, n_val: int = DEFAULT_N_VAL) -> None:
    for split, count in (("test", n), ("val", n_val)):
        caption_docs, mcq_docs = docs(count, split)
        for name, rows in zip(DOC_FILES[split], (caption_docs, mcq_docs)):
            (out / name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        for doc in caption_docs:  # always rewritten: a clip made by an older generator must not survive
            clips.write_clip(out / "videos" / doc["video"], doc["seed"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULT_N, help="test clips")
    p.add_argument("--n-val", type=int, default=DEFAULT_N_VAL, help="validation clips")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    write(a.out, a.n, a.n_val)
    print(f"wrote {a.n} test and {a.n_val} validation clips and their docs to {a.out}")


if __name__ == "__main__":
    sys.exit(main())
