"""The `lvspec-report` console script (also `python -m lvspec_eval.report.cli`).

  lvspec-report summary     RUNS... [--format table|markdown|csv|latex|json] [--output FILE]
  lvspec-report plots       RUNS... [--outdir DIR] [--formats png,svg] [--x auto|retention|...]
  lvspec-report html        RUNS... --output FILE [--title TEXT] [--tokenizer DIR] [--x auto|retention|...]
  lvspec-report leaderboard RUNS... [--output FILE] [--device-name NAME] [--git-revision REV]
  lvspec-report check --baseline FILE RUNS... [--max-tau-drop 5%] [--max-speedup-drop 10%]
                      [--min-retention 0.99] [--max-drop FIELD=F]... [--speedup decode|e2e|token_rate] [--allow-missing]

RUNS are lvspec record files, lmms-eval *_results.json / *_samples_<task>.jsonl files, or folders
holding them. Exit codes: 0 success, 1 `check` found a regression, 2 bad input or arguments.
Only the standard library is imported before a subcommand runs; no torch import at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

EXIT_OK, EXIT_REGRESSION, EXIT_INPUT = 0, 1, 2


def _fraction(text: str) -> float:
    from lvspec_eval.report.check import parse_fraction

    try:
        return parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _drop(text: str) -> tuple[str, float]:
    from lvspec_eval.report.check import parse_drop

    try:
        return parse_drop(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("runs", nargs="+", metavar="RUNS",
                      help="lvspec record files, lmms-eval *_results.json / *_samples_<task>.jsonl, or folders")
    runs.add_argument("--metric", help="lmms-eval metric used as the task score (default: the task's first metric)")
    runs.add_argument("--bootstrap", type=_positive_int, default=1000, metavar="N",
                      help="bootstrap resamples for the 95%% intervals (default 1000; 0: no intervals)")
    runs.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    runs.add_argument("--strict", action="store_true", help="treat input warnings (truncated lines, duplicates) as errors")

    parser = argparse.ArgumentParser(prog="lvspec-report", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", parents=[runs], help="one row per (task, method, target, drafter, settings)")
    p.add_argument("--format", choices=("table", "markdown", "csv", "latex", "json"), default="table")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("plots", parents=[runs], help="speedup vs retention, tau histogram, acceptance by position, "
                                                     "tau vs answer length (PNG and SVG)")
    p.add_argument("--outdir", default="lvspec_plots", help="folder for the figures (default lvspec_plots)")
    p.add_argument("--formats", default="png,svg", help="comma-separated image formats (default png,svg)")
    p.add_argument("--x", choices=("auto", "retention", "edit_sim_ar_mean", "exact_match_ar_mean"), default="auto",
                   help="fidelity axis of the Pareto view (auto: retention where known, else edit similarity)")
    p.set_defaults(func=cmd_plots)

    p = sub.add_parser("html", parents=[runs], help="one self-contained HTML page: tables, plots, per-sample token view")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--title", default="lvspec-report", help="page title")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="folder with tokenizer.json (or the file) to decode token text of records without "
                        "token_texts (default: the records' target folder when it holds one)")
    p.add_argument("--x", choices=("auto", "retention", "edit_sim_ar_mean", "exact_match_ar_mean"), default="auto",
                   help="fidelity axis of the Pareto plot (as in `plots`)")
    p.set_defaults(func=cmd_html)

    p = sub.add_parser("leaderboard", parents=[runs], help="versioned leaderboard JSON (docs/report.md)")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--device-name", help="accelerator name (e.g. 'NVIDIA H100 80GB HBM3') when records lack it")
    p.add_argument("--git-revision", help="override the git revision of the checkout holding lvspec_eval")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("check", parents=[runs], help="compare with a baseline summary/leaderboard JSON")
    p.add_argument("--baseline", required=True, metavar="FILE",
                   help="output of `lvspec-report summary --format json` or `lvspec-report leaderboard`")
    p.add_argument("--max-tau-drop", type=_fraction, metavar="F", help="largest relative drop of tau_mean (5%% or 0.05)")
    p.add_argument("--max-speedup-drop", type=_fraction, metavar="F", help="largest relative drop of the speedup")
    p.add_argument("--min-retention", type=_fraction, metavar="R", help="smallest task-score retention (0.99 or 99%%)")
    p.add_argument("--max-drop", type=_drop, action="append", default=[], metavar="FIELD=F",
                   help="largest relative drop of another summary field, e.g. retention=1%% or exact_match_ar_mean=0 "
                        "(repeatable)")
    p.add_argument("--speedup", choices=("decode", "e2e", "token_rate"), default="decode",
                   help="speedup watched by --max-speedup-drop: speedup_decode_pooled, speedup_e2e_pooled or "
                        "token_rate_speedup_pooled (default decode)")
    p.add_argument("--allow-missing", action="store_true", help="baseline rows absent from RUNS do not fail")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_check)
    return parser


def load_summary(args: argparse.Namespace) -> Any:
    """Read RUNS, pair them, print the input warnings and summarize (the steps every subcommand shares)."""
    from lvspec_eval.report.inputs import ReportInputError, load_inputs
    from lvspec_eval.report.pairing import build_groups
    from lvspec_eval.report.summary import summarize

    inputs = load_inputs(args.runs, metric=args.metric)
    if not inputs.records:
        raise ReportInputError("no lvspec records among the inputs (lmms-eval files alone give no rows): "
                               "add the *.jsonl record files of the runs (model arg stats_path)")
    groups = build_groups(inputs)
    warnings = list(dict.fromkeys(inputs.warnings))
    for warning in warnings:
        print(f"lvspec-report: warning: {warning}", file=sys.stderr)
    if warnings and args.strict:
        raise ReportInputError(f"{len(warnings)} input warning(s) under --strict (see above)")
    return summarize(groups, resamples=args.bootstrap, seed=args.seed)


def emit(text: str, output: Optional[str]) -> None:
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"lvspec-report: wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_summary(args: argparse.Namespace) -> int:
    from lvspec_eval.report.summary import render

    summary = load_summary(args)
    emit(render(summary, args.format), args.output)
    if args.format in ("csv", "latex") and summary.notes:
        for note in summary.notes:
            print(f"lvspec-report: note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_plots(args: argparse.Namespace) -> int:
    from lvspec_eval.report.plots import write_plots

    summary = load_summary(args)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    written, notes = write_plots(summary, args.outdir, formats=formats, x=args.x)
    for note in notes:
        print(f"lvspec-report: note: {note}", file=sys.stderr)
    for path in written:
        print(path)
    return EXIT_OK


def cmd_html(args: argparse.Namespace) -> int:
    from lvspec_eval.report.html import render_html

    page = render_html(load_summary(args), title=args.title, x=args.x, tokenizer=args.tokenizer,
                       sources=[str(r) for r in args.runs])
    emit(page, args.output)
    return EXIT_OK


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import json

    from lvspec_eval.report.leaderboard import build_leaderboard

    board = build_leaderboard(load_summary(args), device_name=args.device_name, revision=args.git_revision)
    emit(json.dumps(board, indent=2, ensure_ascii=False) + "\n", args.output)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from lvspec_eval.report.check import Thresholds, compare, failures, load_baseline, render_findings

    limits = Thresholds(max_tau_drop=args.max_tau_drop, max_speedup_drop=args.max_speedup_drop,
                        min_retention=args.min_retention, speedup=args.speedup, max_drops=tuple(args.max_drop))
    if not limits.any():
        print("lvspec-report check: error: give at least one of --max-tau-drop, --max-speedup-drop, --min-retention, "
              "--max-drop",
              file=sys.stderr)
        return EXIT_INPUT
    baseline = load_baseline(args.baseline)
    findings = compare(baseline, load_summary(args).rows, limits, allow_missing=args.allow_missing)
    emit(render_findings(findings, args.format), args.output)
    return EXIT_REGRESSION if failures(findings) else EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    from lvspec_eval.report.reading import ReportInputError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ReportInputError as exc:
        print(f"lvspec-report: error: {exc}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
