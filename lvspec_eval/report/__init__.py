"""`lvspec-report`: per-sample records (and lmms-eval outputs) -> tables, plots, leaderboard, check.

Records are written first, reports computed later (docs/report.md; every run-level statistic is
named in lvspec_eval.glossary and computed in lvspec_eval.metrics.aggregate).

  inputs       find the input files and read them (record_files: records checked against the
               record schema; lmms_files: lmms-eval `*_results.json` / `*_samples_<task>.jsonl`;
               reading: the JSONL reader policy and ReportInputError; runkey: what a row is about)
  pairing      group records by (task, split, run key), pair them with `ar` and the task scores
  summary      one row per (task, split, method, target, drafter, settings); render as
               table / Markdown / CSV / LaTeX / JSON
  plots        matplotlib figures of a summary (PNG and SVG)
  html         one self-contained HTML page (jinja2 templates in templates/): tables, plots,
               per-sample token provenance vs `ar`
  leaderboard  versioned JSON entries with models, settings, hardware, versions, metrics
  check        compare a summary with a baseline file under thresholds
  cli          the `lvspec-report` console script

Nothing in this package imports torch: the CLI starts fast and runs where no GPU stack exists.
"""
