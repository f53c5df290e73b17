"""Write the testbed tasks' data: test-split clips (mp4) and the doc files of both tasks.

    python -m testbed.make_task [--n 200] [--out tasks/lvspec_testbed]

Deterministic: the same ``--n`` always gives the same docs and the same frames (the committed
folder was made with the defaults). Docs:

* ``caption.jsonl``: one doc per clip, ``{"doc_id", "video", "seed", "attributes", "question"}``
  plus ``"answer"``, a reference caption in the target's style (for reading; the metric uses
  ``attributes``).
* ``mcq.jsonl``: one question per clip, the attribute cycling over the five, with the options
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


def docs(n: int = DEFAULT_N) -> tuple[list[dict], list[dict]]:
    caption_docs, mcq_docs = [], []
    for i, seed in enumerate(clips.split_seeds("test", n)):
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


def write(out: Path, n: int = DEFAULT_N) -> None:
    caption_docs, mcq_docs = docs(n)
    for name, rows in (("caption.jsonl", caption_docs), ("mcq.jsonl", mcq_docs)):
        (out / name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    for doc in caption_docs:  # always rewritten: a clip made by an older generator must not survive
        clips.write_clip(out / "videos" / doc["video"], doc["seed"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULT_N)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    write(a.out, a.n)
    print(f"wrote {a.n} clips and docs to {a.out}")


if __name__ == "__main__":
    sys.exit(main())
