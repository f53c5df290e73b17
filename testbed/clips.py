"""Seeded, deterministic synthetic clips for the testbed (8 frames of 112x112 at 8 fps by default).

A clip shows one or two objects of one colour and shape, each in its own horizontal lane, over a
plain background; the objects either slide sideways (16-20 px per frame, i.e. more than one 14 px
vision patch, bouncing at the edges) or stay still. Objects are large (radius 16% of the frame) and colours saturated with a little
per-clip jitter: the sizes and speeds a tiny Qwen2.5-VL learns in minutes (see testbed.md).

Splits are disjoint by construction: every clip seed belongs to exactly one split
(:func:`split_seeds`), and the attributes and geometry of a clip depend on its seed only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from testbed.grammar import Attributes, sample_attributes

FRAMES = 8
SIZE = 112
FPS = 8
RADIUS = 0.16  # of the frame side
#: Speed range of moving objects, in frame sides per frame: >= one 14 px patch per frame at 112 px
#: (0.09-0.13 was never learned by the trained target; see reports/testbed.md).
SPEED = (0.14, 0.18)

COLOUR_RGB = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 230), "yellow": (235, 215, 20)}
BACKGROUND_RGB = {"black": (12, 12, 12), "white": (242, 242, 242), "gray": (128, 128, 128)}

#: Disjoint seed ranges per split.
SPLIT_BASE = {"train": 0, "val": 1_000_000, "test": 2_000_000}


#: First index, within the val split, of the validation clips of the testbed tasks (`*_val`): the
#: training's stop checks use the first `train.py --val-clips` (64) val clips, so the tasks' validation
#: clips start far beyond them (tests/test_testbed.py checks every committed role's n_val against it).
VAL_TASK_START = 1000


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """The clip seeds ``start`` .. ``start + n - 1`` of ``split`` (train / val / test never share a seed)."""
    if split not in SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_BASE)}")
    if start < 0 or start + n > 1_000_000:
        raise ValueError("at most 1,000,000 clips per split (indices 0 .. 999,999)")
    base = SPLIT_BASE[split] + start
    return list(range(base, base + n))


def clip_attributes(seed: int) -> Attributes:
    return sample_attributes(random.Random(f"attrs-{seed}"))


def _mask(shape: str, yy: Any, xx: Any, cy: float, cx: float, r: float) -> Any:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy * dy + dx * dx <= r * r
    if shape == "square":
        s = r * 0.85
        return (abs(dy) <= s) & (abs(dx) <= s)
    if shape == "triangle":  # apex up
        top, bottom = cy - r, cy + r * 0.8
        half = (yy - top) / (bottom - top) * r
        return (yy >= top) & (yy <= bottom) & (abs(dx) <= half)
    if shape == "cross":
        arm = r * 0.33
        return ((abs(dx) <= arm) & (abs(dy) <= r)) | ((abs(dy) <= arm) & (abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def render(seed: int, frames: int = FRAMES, size: int = SIZE) -> tuple[Any, Attributes]:
    """RGB frames (uint8, (frames, size, size, 3)) and the attributes of clip ``seed``."""
    import numpy as np

    attrs = clip_attributes(seed)
    rng = random.Random(f"geom-{seed}")
    r = RADIUS * size
    def jitter(rgb):
        return tuple(int(min(255, max(0, c + rng.randint(-15, 15)))) for c in rgb)
    fg = np.array(jitter(COLOUR_RGB[attrs.colour]), dtype=np.uint8)
    bg = np.array(jitter(BACKGROUND_RGB[attrs.background]), dtype=np.uint8)
    n = 2 if attrs.count == "two" else 1
    lanes = [size / 2] if n == 1 else [size * 0.27, size * 0.73]
    lo, hi = r + 1, size - r - 1
    objects = []
    for lane in lanes:
        x0 = rng.uniform(lo, hi)
        v = rng.choice((-1, 1)) * rng.uniform(SPEED[0], SPEED[1]) * size if attrs.motion == "moving" else 0.0
        objects.append((lane + rng.uniform(-2, 2), x0, v))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    span = hi - lo
    for t in range(frames):
        out[t] = bg
        for cy, x0, v in objects:
            pos = (x0 - lo + v * t) % (2 * span)  # bounce between lo and hi
            cx = lo + (pos if pos <= span else 2 * span - pos)
            out[t][_mask(attrs.shape, yy, xx, cy, cx, r)] = fg
    return out, attrs


def write_clip(path: Path, seed: int) -> Path:
    """Write clip ``seed`` as an H.264 mp4 (atomic; readable by decord)."""
    from testbed.fixtures.tiny import write_mp4

    frames, _ = render(seed)
    return write_mp4(path, frames, fps=FPS)


def roundtrip(frames: Any) -> Any:
    """``frames`` after an H.264 encode / decode, as the evaluation sees them (uint8 RGB)."""
    import io

    import av
    import numpy as np

    from testbed.fixtures.tiny import encode_mp4

    buf = io.BytesIO()
    encode_mp4(frames, buf, fps=FPS)
    buf.seek(0)
    with av.open(buf, mode="r") as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
