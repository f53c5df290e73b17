"""The testbed's answer grammar: attributes, captions with paraphrasable fillers, MCQ, and the parser.

A clip has five attributes (the *anchors* of its caption):

==========  ======================================  =====================================
attribute   values                                  needs
==========  ======================================  =====================================
count       one, two                                counting objects
colour      red, green, blue, yellow                the objects' colour
shape       circle, square, triangle, cross         the objects' shape
background  black, white, gray                      the backdrop
motion      moving, still                           time (two frames or more)
==========  ======================================  =====================================

A caption (about 40-55 Qwen tokens) states each anchor once, among six *filler* slots whose
wording carries no information about the clip (e.g. "In this video," / "In this clip,"). Each
filler slot draws from four paraphrases with skewed probabilities. The target is trained on
:data:`TARGET_STYLE`; the drafter on :data:`DRAFTER_STYLE`, which prefers another paraphrase in
five of the six slots, as a real drafter phrases things its own way.

The parser reads attributes back from any answer by word: the value sets are disjoint, so a
word names its attribute. :func:`score_caption` gives ``anchor_f1`` (F1 of stated vs true
attribute-value pairs: a wrong value costs precision, a missing one recall) and per-attribute
correctness (stated right and no wrong value stated).

Pure Python: no torch, importable by lmms-eval task hooks.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

COUNTS = ("one", "two")
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("black", "white", "gray")
MOTIONS = ("moving", "still")

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "count": COUNTS,
    "colour": COLOURS,
    "shape": SHAPES,
    "background": BACKGROUNDS,
    "motion": MOTIONS,
}

PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

#: word -> (attribute, canonical value); plural shape nouns map to the singular value.
WORD_VALUE: dict[str, tuple[str, str]] = {v: (a, v) for a, vals in ATTRIBUTES.items() for v in vals}
WORD_VALUE.update({p: ("shape", s) for s, p in PLURAL.items()})

#: Filler slots, four paraphrases each. None contains an attribute word.
FILLERS: dict[str, tuple[str, ...]] = {
    "open": ("In this video,", "In this clip,", "The video shows that", "Here we can see that"),
    "place": ("on a", "against a", "in front of a", "over a"),
    "duration": ("throughout the clip.", "the whole time.", "from start to end.", "for the entire video."),
    "camera": ("The camera stays fixed.", "The camera is steady.", "The view never changes.", "The shot is static."),
    "rest": ("Nothing else appears in the scene.", "No other objects are visible.",
             "The rest of the frame is empty.", "There is nothing else to see."),
    "look": ("The lighting is even.", "The colors are bright and clear.", "The image is sharp and clean.",
             "The picture looks simple."),
}

SKEW = (0.6, 0.2, 0.1, 0.1)

#: Paraphrase probabilities per slot (index-aligned with FILLERS).
TARGET_STYLE: dict[str, tuple[float, ...]] = {slot: SKEW for slot in FILLERS}
#: The drafter's own preferences: another favourite in five of six slots.
DRAFTER_STYLE: dict[str, tuple[float, ...]] = {
    "open": (0.2, 0.6, 0.1, 0.1),
    "place": SKEW,
    "duration": (0.1, 0.2, 0.6, 0.1),
    "camera": (0.2, 0.6, 0.1, 0.1),
    "rest": (0.1, 0.6, 0.2, 0.1),
    "look": (0.1, 0.1, 0.2, 0.6),
}
STYLES = {"target": TARGET_STYLE, "drafter": DRAFTER_STYLE}

CAPTION_PROMPT = "Describe the video in detail."
LIST_PROMPT = "List the attributes of the objects and the background."
MCQ_PREAMBLE = ("Select the best answer to the following multiple-choice question based on the video. "
                "Respond with only the letter of the correct option.")
LETTERS = "ABCD"

#: MCQ question per attribute. Options are listed in a fixed order per question type (so the
#: letter follows from the value; a tiny model need not learn to match option text).
MCQ_QUESTIONS: dict[str, str] = {
    "count": "How many objects are in the video?",
    "colour": "What color are the objects?",
    "shape": "What shape are the objects?",
    "background": "What color is the background?",
    "motion": "Are the objects moving or still?",
}

_WORD_RE = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Attributes:
    count: str
    colour: str
    shape: str
    background: str
    motion: str

    def as_dict(self) -> dict[str, str]:
        return {"count": self.count, "colour": self.colour, "shape": self.shape,
                "background": self.background, "motion": self.motion}

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> "Attributes":
        missing = [a for a in ATTRIBUTES if a not in d]
        if missing:
            raise KeyError(f"attributes missing {missing}; expected keys {list(ATTRIBUTES)}")
        for a, vals in ATTRIBUTES.items():
            if d[a] not in vals:
                raise ValueError(f"attribute {a}={d[a]!r} is not one of {vals}")
        return cls(**{a: d[a] for a in ATTRIBUTES})


def sample_attributes(rng: random.Random) -> Attributes:
    return Attributes(**{a: rng.choice(vals) for a, vals in ATTRIBUTES.items()})


def _pick(rng: random.Random, slot: str, style: Mapping[str, Sequence[float]]) -> str:
    return rng.choices(FILLERS[slot], weights=style[slot])[0]


def caption(attrs: Attributes, rng: random.Random, style: str | Mapping[str, Sequence[float]] = "target") -> str:
    """A caption of the clip with fillers drawn from ``style`` ("target", "drafter" or a mapping)."""
    probs = STYLES[style] if isinstance(style, str) else style
    plural = attrs.count == "two"
    noun = PLURAL[attrs.shape] if plural else attrs.shape
    there = "there are two" if plural else "there is one"
    subject = "They are" if plural else "It is"
    opener = _pick(rng, "open", probs)
    first = f"{opener} {there} {attrs.colour} {noun} {_pick(rng, 'place', probs)} {attrs.background} background."
    first = first[0].upper() + first[1:]
    return " ".join([
        first,
        f"{subject} {attrs.motion} {_pick(rng, 'duration', probs)}",
        _pick(rng, "camera", probs),
        _pick(rng, "rest", probs),
        _pick(rng, "look", probs),
    ])


def modal_caption(attrs: Attributes, style: str = "target") -> str:
    """The caption with every filler at its most likely paraphrase (what greedy decoding converges to)."""
    probs = STYLES[style]
    modal = {slot: tuple(1.0 if i == max(range(len(p)), key=p.__getitem__) else 0.0 for i in range(len(p)))
             for slot, p in probs.items()}
    return caption(attrs, random.Random(0), modal)


def attribute_list(attrs: Attributes) -> str:
    """The short answer to :data:`LIST_PROMPT`: ``"two red circles, black background, moving."``."""
    noun = PLURAL[attrs.shape] if attrs.count == "two" else attrs.shape
    return f"{attrs.count} {attrs.colour} {noun}, {attrs.background} background, {attrs.motion}."


def mcq_options(attribute: str) -> list[str]:
    vals = list(ATTRIBUTES[attribute])
    if attribute == "count":
        vals = ["one", "two", "three", "four"]
    return vals


def mcq_prompt(attribute: str) -> str:
    opts = "\n".join(f"{LETTERS[i]}. {v}" for i, v in enumerate(mcq_options(attribute)))
    return f"{MCQ_PREAMBLE}\n{MCQ_QUESTIONS[attribute]}\n{opts}\nThe best answer is:"


def mcq_answer(attrs: Attributes, attribute: str) -> str:
    return LETTERS[mcq_options(attribute).index(getattr(attrs, attribute))]


def parse_mcq(answer: str) -> str | None:
    """The first standalone option letter in the answer (``"B"``, ``"B."``, ``"(B) blue"``), else None."""
    m = re.search(r"\b([A-D])\b", answer.strip())
    return m.group(1) if m else None


def parse_caption(text: str) -> dict[str, set[str]]:
    """Attribute -> set of values stated anywhere in ``text`` (by word, case-insensitive)."""
    stated: dict[str, set[str]] = {a: set() for a in ATTRIBUTES}
    for word in _WORD_RE.findall(text.lower()):
        hit = WORD_VALUE.get(word)
        if hit:
            stated[hit[0]].add(hit[1])
    return stated


def score_caption(text: str, truth: Attributes | Mapping[str, str]) -> dict[str, float]:
    """``anchor_f1`` and ``attr_<name>`` (1.0 when the true value is stated and no wrong one) for one answer."""
    truth = truth if isinstance(truth, Attributes) else Attributes.from_dict(truth)
    stated = parse_caption(text)
    true = truth.as_dict()
    n_stated = sum(len(v) for v in stated.values())
    n_right = sum(true[a] in vals for a, vals in stated.items())
    precision = n_right / n_stated if n_stated else 0.0
    recall = n_right / len(ATTRIBUTES)
    f1 = 2 * precision * recall / (precision + recall) if n_right else 0.0
    out = {"anchor_f1": f1}
    for a, vals in stated.items():
        out[f"attr_{a}"] = float(vals == {true[a]})
    return out


def anchor_char_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the anchor words in ``text`` (the grammar's true anchors)."""
    return [(m.start(), m.end()) for m in _WORD_RE.finditer(text.lower()) if m.group() in WORD_VALUE]
