"""Where the checkout and the on-disk caches keep what the testbed and the tests use, and the
small-video settings they share.

The testbed lives beside the installed package, in the checkout (see the README's design note): its
commands run from the repository root (`python -m testbed.demo`), so this is the one module that
locates the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "testbed" / "weights"  # the trained pairs, one folder per role
TASKS = REPO / "tasks"
TESTBED_TASK_DIR = TASKS / "lvspec_testbed"  # the offline benchmark's two tasks (caption, mcq)
TINY_TASK_DIR = TASKS / "lvspec_tiny"  # the random-model smoke task of the tests
REPORTS = REPO / "reports"
BASELINE = REPORTS / "baseline" / "testbed_cpu.json"

#: Video settings of the offline tasks and the tiny test models: 8 frames of 112x112 -> 4 temporal slices x
#: 16 merged tokens (Qwen2.5-VL), 8 x 16 pooled tokens + 1 newline (LLaVA-OneVision).
VIDEO_PIXELS = dict(min_pixels=56 * 56, max_pixels=112 * 112)
VIDEO_ARGS = dict(max_num_frames=8, **VIDEO_PIXELS)
#: The same as `--model_args` text.
VIDEO_MODEL_ARGS = ",".join(f"{k}={v}" for k, v in VIDEO_ARGS.items())


def default_cache_root() -> Path:
    """Root folder of the on-disk caches: ``$LVSPEC_CACHE`` if set, else ``~/.cache/lvspec_eval``."""
    env = os.environ.get("LVSPEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lvspec_eval"


def testbed_cache() -> Path:
    """The testbed's cache: encoded training clips (``data-v*``) and materialised checkpoints."""
    return default_cache_root() / "testbed"
