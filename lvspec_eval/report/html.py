"""`lvspec-report html`: one self-contained HTML page of a summary.

The page holds the summary table and its notes, every figure of `plots.figures` (SVG embedded as
data URIs, so figure ids never clash), and a per-sample view: for each sample of each
speculative row, its generated tokens coloured by provenance (how each token was accepted; codes
of `lvspec_eval.engine.loop`) beside the `ar` output of the same doc, with the tokens where the
two differ marked. No network fetches: CSS and a small filter script are inline. Every text
from the inputs goes through html.escape.

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
from html import escape
from pathlib import Path
from typing import Any, Callable, Optional

from lvspec_eval import __version__
from lvspec_eval.metrics.records import token_pieces
from lvspec_eval.report.load import Group, ReportInputError
from lvspec_eval.report.summary import Summary, render_table, row_label, short_model

#: Provenance code -> (name, background colour, meaning). The browser test reads these colours.
PROVENANCE: dict[str, tuple[str, str, str]] = {
    "P": ("prefill", "#ced4da", "first token, the target's choice after prefill"),
    "T": ("target step", "#e9ecef", "plain greedy step of the target (ar, or a round that drafted nothing)"),
    "E": ("exact", "#b2f2bb", "draft token equal to the target's choice"),
    "L": ("loose", "#ffd43b", "draft token accepted by the rule although the target chose another"),
    "S": ("shift", "#d0bfff", "draft anchor salvaged by position-shift tolerance"),
    "C": ("correction", "#ffa8a8", "the target's token after a rejected draft token"),
    "B": ("bonus", "#74c0fc", "the target's extra token after a fully accepted block"),
}
UNKNOWN_COLOUR = "#ffffff"  # a code outside PROVENANCE (or no provenance)
DIFF_COLOUR = "#e03131"  # outline of tokens that differ from the other side

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #212529; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #dee2e6; padding-bottom: .2em; margin-top: 1.6em; }
.meta { color: #495057; } nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #dee2e6; padding: 3px 6px; text-align: left; white-space: nowrap; }
th { background: #f1f3f5; } .table-wrap { overflow-x: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; border: 1px solid #dee2e6; padding: .4em; }
figure img { width: 560px; max-width: 100%; height: auto; display: block; }
figcaption { font-size: 12px; color: #495057; }
.legend span.t { margin-right: .6em; }
.controls { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #dee2e6; z-index: 1; }
.controls label { margin-right: 1.2em; }
details.sample { border: 1px solid #dee2e6; border-radius: 4px; margin: .3em 0; }
details.sample > summary { cursor: pointer; padding: .3em .6em; background: #f8f9fa; }
details.sample.differs > summary { background: #fff5f5; }
details.sample.failed > summary { background: #fff3bf; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; padding: .6em; }
.side h4 { margin: 0 0 .3em; font-size: 13px; }
.tokens { font: 13px/1.9 ui-monospace, monospace; white-space: pre-wrap; word-break: break-word; margin: 0; }
span.t { border-radius: 2px; padding: 0 1px; }
span.d { outline: 2px solid DIFF_COLOUR; outline-offset: -1px; }
.side.ar span.t { background: #f8f9fa; }
.side.ar span.d { background: #ffe3e3; }
.answer { color: #495057; font-size: 12px; margin-top: .4em; }
.error { color: #c92a2a; }
"""


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


def token_spans(pieces: list[str], codes: str, diff: list[bool], ids: list[int]) -> str:
    """One <span> per token: class t<code> for the colour, d where it differs; title names both."""
    out = []
    for i, (piece, tok) in enumerate(zip(pieces, ids)):
        code = codes[i] if i < len(codes) else "?"
        name = PROVENANCE.get(code, ("unknown",))[0]
        title = f"#{i} id {tok}: {name}" + (", differs" if diff[i] else "")
        cls = f"t t{code if code in PROVENANCE else 'X'}" + (" d" if diff[i] else "")
        text = escape(display(piece))
        out.append(f'<span class="{cls}" data-code="{escape(code)}" title="{escape(title)}">{text}</span>')
    return "".join(out)


def ar_side(record: dict[str, Any], ar_record: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The `ar` output paired with a record: its own paired_baseline fields, else the ar run's record."""
    if "ar_tokens" in record:
        return {"tokens": record["ar_tokens"], "texts": record.get("ar_token_texts"), "text": record.get("ar_text"),
                "source": "paired_baseline"}
    if ar_record is not None and not ar_record.get("error"):
        return {"tokens": ar_record["tokens"], "texts": ar_record.get("token_texts"), "text": ar_record.get("text"),
                "source": "ar run"}
    return None


def sample_html(run: int, row: dict[str, Any], group: Group, record: dict[str, Any], texts: TokenText) -> str:
    label = f"{row['method']} [{row['settings_label']}]"
    head = f"{escape(row['task'])} \u00b7 doc {escape(str(record['doc_id']))} \u00b7 {escape(label)}"
    attrs = f'data-run="{run}" data-method="{escape(row["method"])}"'
    if record.get("error"):
        return (f'<details class="sample failed" {attrs} data-differs="0"><summary>{head} \u00b7 failed</summary>'
                f'<p class="error">{escape(str(record["error"]))}</p></details>')
    tokens = list(record["tokens"])
    other = ar_side(record, group.ar_records.get(record["doc_id"]))
    mine_diff = [False] * len(tokens)
    ar_html = '<p class="answer">no ar output to compare with (decode with paired_baseline=true or give an ar run)</p>'
    differs = False
    if other is not None:
        ar_tokens = list(other["tokens"])
        mine_diff, ar_diff = differing(tokens, ar_tokens)
        differs = tokens != ar_tokens
        ar_pieces = texts.pieces(ar_tokens, other["texts"], row["target"])
        ar_html = (f'<p class="tokens">{token_spans(ar_pieces, "", ar_diff, ar_tokens)}</p>'
                   f'<p class="answer">answer: {escape(str(other["text"]))} ({escape(other["source"])})</p>')
    pieces = texts.pieces(tokens, record.get("token_texts"), row["target"])
    codes = record.get("provenance") or ""
    tau = "-" if record.get("tau") is None else f"{record['tau']:.2f}"
    counts = ", ".join(f"{PROVENANCE[c][0]} {codes.count(c)}" for c in PROVENANCE if codes.count(c))
    status = "" if other is None else (" \u00b7 differs from ar" if differs else " \u00b7 same as ar")
    summary = f"{head} \u00b7 {len(tokens)} tokens \u00b7 tau {tau}{status}"
    css = "sample differs" if differs else "sample"
    return (f'<details class="{css}" {attrs} data-differs="{int(differs)}"><summary>{summary}</summary>'
            f'<div class="pair"><div class="side method"><h4>{escape(label)} ({escape(counts)})</h4>'
            f'<p class="tokens">{token_spans(pieces, codes, mine_diff, tokens)}</p>'
            f'<p class="answer">answer: {escape(str(record.get("text", "")))}</p></div>'
            f'<div class="side ar"><h4>ar</h4>{ar_html}</div></div></details>')


def legend_html() -> str:
    items = "".join(f'<span class="t t{code}" title="{escape(meaning)}">{code} {escape(name)}</span>'
                    for code, (name, _, meaning) in PROVENANCE.items())
    return (f'<p class="legend">{items}<span class="t d">differs from the other side</span></p>'
            '<p class="meta">Left: the method\'s tokens, coloured by how each was accepted (hover a token for its '
            'index, id and kind). Right: the ar output of the same doc. Outlined tokens are outside the longest '
            'matching blocks of the two token sequences (difflib).</p>')


def figures_html(summary: Summary, x: str) -> tuple[str, list[str]]:
    from lvspec_eval.report.plots import figures

    parts, notes = [], []
    for stem, fig, note in figures(summary, x):
        if note:
            notes.append(note)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        parts.append(f'<figure><img alt="{escape(stem)}" src="data:image/svg+xml;base64,{data}">'
                     f'<figcaption>{escape(stem)}</figcaption></figure>')
    return f'<div class="figures">{"".join(parts)}</div>', notes


SCRIPT = """
(function () {
  var run = document.getElementById('f-run'), diff = document.getElementById('f-diff');
  var count = document.getElementById('f-count'), items = document.querySelectorAll('details.sample');
  function apply() {
    var shown = 0;
    items.forEach(function (e) {
      var ok = (!run.value || e.dataset.run === run.value) && (!diff.checked || e.dataset.differs === '1');
      e.hidden = !ok; if (ok) { shown++; }
    });
    count.textContent = shown + ' of ' + items.length + ' samples shown';
  }
  function openAll(open) { items.forEach(function (e) { if (!e.hidden) { e.open = open; } }); }
  run.addEventListener('change', apply); diff.addEventListener('change', apply);
  document.getElementById('f-open').addEventListener('click', function () { openAll(true); });
  document.getElementById('f-close').addEventListener('click', function () { openAll(false); });
  apply();
})();
"""


def render_html(summary: Summary, *, title: str = "lvspec-report", x: str = "auto", tokenizer: Optional[str] = None,
                sources: Optional[list[str]] = None) -> str:
    """The whole page as one string (see the module docstring)."""
    texts = TokenText(tokenizer)
    if tokenizer:
        texts.decoder(None)  # a bad --tokenizer fails even when every record has token_texts
    runs = [(i, row, group) for i, (row, group) in enumerate(zip(summary.rows, summary.groups, strict=True))
            if row["method"] != "ar"]
    options = "".join(f'<option value="{i}">{escape(row_label(row))} \u00b7 draft {escape(short_model(row["draft"]))}'
                      f'</option>' for i, row, _ in runs)
    samples = "".join(sample_html(i, row, group, record, texts)
                      for i, row, group in runs for record in group.records.values())
    figs, fig_notes = figures_html(summary, x) if summary.rows else ("", [])
    notes = summary.notes + fig_notes + texts.notes
    notes_html = ("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    inputs = escape(", ".join(sources)) if sources else "-"
    no_samples = "" if runs else "<p>No speculative rows: nothing to compare with ar.</p>"
    colours = "".join(f".t{c} {{ background: {colour}; }}\n" for c, (_, colour, _) in PROVENANCE.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS.replace("DIFF_COLOUR", DIFF_COLOUR)}{colours}.tX {{ background: {UNKNOWN_COLOUR}; }}</style>
</head><body>
<h1>{escape(title)}</h1>
<p class="meta">lvspec-report {escape(__version__)} \u00b7 {escape(created)} \u00b7 {len(summary.rows)} rows \u00b7
inputs: {inputs}. Definitions of every column: docs/report.md.</p>
<nav><a href="#summary">Summary</a><a href="#plots">Plots</a><a href="#samples">Samples</a></nav>
<section id="summary"><h2>Summary</h2>
<div class="table-wrap">{render_table(summary.rows, "html")}</div>
{notes_html}</section>
<section id="plots"><h2>Plots</h2>{figs}</section>
<section id="samples"><h2>Samples</h2>
{legend_html()}
<div class="controls"><label>run <select id="f-run"><option value="">all</option>{options}</select></label>
<label><input type="checkbox" id="f-diff"> only samples that differ from ar</label>
<button type="button" id="f-open">expand shown</button> <button type="button" id="f-close">collapse all</button>
<span id="f-count"></span></div>
{no_samples}<div id="sample-list">{samples}</div>
</section>
<script>{SCRIPT}</script>
</body></html>
"""
