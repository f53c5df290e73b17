"""`lvspec-report html`: one self-contained HTML page of a summary.

The page holds the summary table (header tooltips: the glossary's definitions) and its notes,
every figure of `plots.figures` (SVG embedded as data URIs, so figure ids never clash), and a
per-sample view: for each sample of each speculative row, its generated tokens coloured by
provenance (codes of `lvspec_eval.glossary`) beside the `ar` output of the same doc, with the
tokens where the two differ marked. No network fetches: CSS and a small filter script are inline.

The page comes from the jinja2 templates in `lvspec_eval/report/templates/` with autoescaping on:
every text from the inputs is escaped by the template engine, none by hand. This module builds
the template's context.

Token text, per token, comes from the record's `token_texts` / `ar_token_texts` (written by the
backends), else from the tokenizer (`tokenizer.json`, read with the `tokenizers` library) of
--tokenizer or of the record's target folder, else the ids are shown as <id>.
"""

from __future__ import annotations

import base64
import datetime as _dt
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from lvspec_eval import __version__, glossary
from lvspec_eval.metrics.records import token_pieces
from lvspec_eval.report.pairing import Group
from lvspec_eval.report.reading import ReportInputError
from lvspec_eval.report.summary import DISPLAY_COLUMNS, Summary, column_title, row_label, short_model

#: Background colour of each provenance code (names and meanings: lvspec_eval.glossary.PROVENANCE).
#: The browser test reads these colours.
COLOURS: dict[str, str] = {"P": "#ced4da", "T": "#e9ecef", "E": "#b2f2bb", "L": "#ffd43b", "S": "#d0bfff",
                           "C": "#ffa8a8", "B": "#74c0fc"}
#: Provenance code -> (name, background colour, meaning).
PROVENANCE: dict[str, tuple[str, str, str]] = {code: (p.name, COLOURS[code], p.meaning)
                                               for code, p in glossary.PROVENANCE.items()}
UNKNOWN_COLOUR = "#ffffff"  # a code outside PROVENANCE (or no provenance)
DIFF_COLOUR = "#e03131"  # outline of tokens that differ from the other side


@dataclass
class TokenText:
    """Per-token text of records: their own token_texts, else a tokenizer, else the ids."""

    tokenizer: Optional[str] = None  # --tokenizer: a folder with tokenizer.json, or the file
    notes: list[str] = field(default_factory=list)
    _decoders: dict[str, Optional[Callable[[list[int]], str]]] = field(default_factory=dict)

    def decoder(self, model: Optional[str]) -> Optional[Callable[[list[int]], str]]:
        where = self.tokenizer or model
        if where is None:
            return None
        if where not in self._decoders:
            path = Path(where).expanduser()
            path = path / "tokenizer.json" if path.is_dir() else path
            if path.name == "tokenizer.json" and path.is_file():
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(path))
                self._decoders[where] = lambda ids: tok.decode(ids, skip_special_tokens=False)
                self.notes.append(f"token text decoded with {path} where records lack token_texts")
            elif self.tokenizer:
                raise ReportInputError(f"--tokenizer {self.tokenizer}: no tokenizer.json there; give a model folder "
                                       "holding tokenizer.json, or the file itself")
            else:
                self._decoders[where] = None
        return self._decoders[where]

    def pieces(self, tokens: list[int], texts: Any, model: Optional[str]) -> list[str]:
        if isinstance(texts, list) and len(texts) == len(tokens) and all(isinstance(t, str) for t in texts):
            return texts
        decode = self.decoder(model)
        if decode is not None:
            return token_pieces(decode, list(tokens))
        note = ("records lack token_texts and no tokenizer.json was found: token ids are shown; "
                "pass --tokenizer MODEL_FOLDER")
        if note not in self.notes:
            self.notes.append(note)
        return [f"<{t}>" for t in tokens]


def differing(tokens: list[int], other: list[int]) -> tuple[list[bool], list[bool]]:
    """Per token of each side: True where it is not part of a matching block (difflib on ids)."""
    mine, theirs = [True] * len(tokens), [True] * len(other)
    matcher = difflib.SequenceMatcher(None, other, tokens, autojunk=False)
    for block in matcher.get_matching_blocks():
        for j in range(block.size):
            theirs[block.a + j] = False
            mine[block.b + j] = False
    return mine, theirs


def display(piece: str) -> str:
    """A token's text as shown: a newline gets a visible mark before it, an empty piece (part of a
    multi-byte character) a thin space so that its colour shows."""
    return piece.replace("\n", "\u21b5\n") if piece else "\u2009"


def token_spans(pieces: list[str], codes: str, diff: list[bool], ids: list[int]) -> list[dict[str, str]]:
    """One span per token: class t<code> for the colour, d where it differs; title names both."""
    out = []
    for i, (piece, tok) in enumerate(zip(pieces, ids)):
        code = codes[i] if i < len(codes) else "?"
        name = PROVENANCE.get(code, ("unknown",))[0]
        out.append({"cls": f"t t{code if code in PROVENANCE else 'X'}" + (" d" if diff[i] else ""), "code": code,
                    "title": f"#{i} id {tok}: {name}" + (", differs" if diff[i] else ""), "text": display(piece)})
    return out


def ar_side(record: dict[str, Any], ar_record: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The `ar` output paired with a record: its own paired_baseline fields, else the ar run's record."""
    if "ar_tokens" in record:
        return {"tokens": record["ar_tokens"], "texts": record.get("ar_token_texts"), "text": record.get("ar_text"),
                "source": "paired_baseline"}
    if ar_record is not None and not ar_record.get("error"):
        return {"tokens": ar_record["tokens"], "texts": ar_record.get("token_texts"), "text": ar_record.get("text"),
                "source": "ar run"}
    return None


def sample_view(run: int, row: dict[str, Any], group: Group, record: dict[str, Any], texts: TokenText) -> dict:
    """The template context of one sample."""
    label = f"{row['method']} [{row['settings_label']}]"
    view: dict[str, Any] = {"run": run, "method": row["method"], "label": label, "error": record.get("error"),
                            "head": f"{row['task']} \u00b7 doc {record['doc_id']} \u00b7 {label}"}
    if view["error"]:
        view["error"] = str(view["error"])
        return view
    tokens = list(record["tokens"])
    other = ar_side(record, group.ar_records.get(record["doc_id"]))
    mine_diff = [False] * len(tokens)
    view["ar"], view["differs"] = None, False
    if other is not None:
        ar_tokens = list(other["tokens"])
        mine_diff, ar_diff = differing(tokens, ar_tokens)
        view["differs"] = tokens != ar_tokens
        view["ar"] = {"spans": token_spans(texts.pieces(ar_tokens, other["texts"], row["target"]), "", ar_diff,
                                           ar_tokens),
                      "text": str(other["text"]), "source": other["source"]}
    codes = record.get("provenance") or ""
    tau = "-" if record.get("tau") is None else f"{record['tau']:.2f}"
    ar_count = "" if other is None else f" (ar {len(other['tokens'])})"
    status = "" if other is None else (" \u00b7 differs from ar" if view["differs"] else " \u00b7 same as ar")
    view.update(
        spans=token_spans(texts.pieces(tokens, record.get("token_texts"), row["target"]), codes, mine_diff, tokens),
        counts=", ".join(f"{PROVENANCE[c][0]} {codes.count(c)}" for c in PROVENANCE if codes.count(c)),
        summary=f"{view['head']} \u00b7 {len(tokens)} tokens{ar_count} \u00b7 tau {tau}{status}",
        text=str(record.get("text", "")),
    )
    return view


def figure_views(summary: Summary, x: str) -> tuple[list[dict[str, str]], list[str]]:
    from lvspec_eval.report.plots import figures

    views, notes = [], []
    for stem, fig, note in figures(summary, x):
        if note:
            notes.append(note)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        views.append({"stem": stem, "src": "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()})
    return views, notes


def environment() -> Any:
    """The jinja2 environment of the page's templates (package data), autoescaping on."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("lvspec_eval.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(summary: Summary, *, title: str = "lvspec-report", x: str = "auto", tokenizer: Optional[str] = None,
                sources: Optional[list[str]] = None) -> str:
    """The whole page as one string (see the module docstring)."""
    texts = TokenText(tokenizer)
    if tokenizer:
        texts.decoder(None)  # a bad --tokenizer fails even when every record has token_texts
    runs = [(i, row, group) for i, (row, group) in enumerate(zip(summary.rows, summary.groups, strict=True))
            if row["method"] != "ar"]
    samples = [sample_view(i, row, group, record, texts)
               for i, row, group in runs for record in group.records.values()]
    figs, fig_notes = figure_views(summary, x) if summary.rows else ([], [])
    return environment().get_template("report.html").render(
        title=title,
        version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        inputs=", ".join(sources) if sources else "-",
        columns=[{"header": header, "title": column_title(fields)} for header, fields, _ in DISPLAY_COLUMNS],
        rows=[[cell(row) for _, _, cell in DISPLAY_COLUMNS] for row in summary.rows],
        notes=summary.notes + fig_notes + texts.notes,
        figures=figs,
        provenance=glossary.PROVENANCE,
        runs=[{"index": i, "label": f"{row_label(row)} \u00b7 draft {short_model(row['draft'])}"} for i, row, _ in runs],
        samples=samples,
        colours=COLOURS,
        unknown_colour=UNKNOWN_COLOUR,
        diff_colour=DIFF_COLOUR,
    )
