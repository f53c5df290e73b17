"""`lvspec-report`: per-sample records (and lmms-eval outputs) -> tables, plots, leaderboard, check.

Records are written first, reports computed later (see docs/report.md for every definition).

  load         read record files, lmms-eval `*_results.json` / `*_samples_<task>.jsonl`, pair them
  summary      one row per (task, split, method, target, drafter, settings); render as
               table / Markdown / CSV / LaTeX / JSON
  plots        matplotlib figures of a summary (PNG and SVG)
  html         one self-contained HTML page: tables, plots, per-sample token provenance vs `ar`
  leaderboard  versioned JSON entries with models, settings, hardware, versions, metrics
  check        compare a summary with a baseline file under thresholds
  cli          the `lvspec-report` console script

Nothing in this package imports torch: the CLI starts fast and runs where no GPU stack exists.
"""
