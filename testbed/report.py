"""Regenerate the measured sections of reports/testbed.md from the runs' JSON outputs.

    python -m testbed.report [--check] [--file reports/testbed.md]

reports/testbed.md is hand-written prose around GENERATED blocks:

    <!-- BEGIN GENERATED <name> ... -->
    ...   (written here, never by hand)
    <!-- END GENERATED <name> -->

Each block is rendered from one JSON file (BLOCKS: name -> source, renderer); a missing or stale
source gives a clearly marked "to be regenerated" placeholder naming the command that makes it, so
no number in a block is copied by hand. `--check` exits 1 when the file differs from what the
sources give (tests/test_testbed.py runs it on the committed files).

Sources and the commands that make them (docs/testbed.md):
  noise_floor   reports/noise_floor.json          python -m testbed.noise_floor
  demo          reports/demo/summary.json         make demo (python -m testbed.demo)
  sweep         reports/testbed_sweep.json        python -m testbed.sweep (validation clips)
  demo_llava    reports/demo_llava_ov/summary.json python -m testbed.demo --family llava_ov --methods ...
  demo_qwen3    reports/demo_qwen3_vl/summary.json python -m testbed.demo --family qwen3_vl --methods ...
  bars          reports/demo/summary.json         (the lvspec bars, from the demo's caption table)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from testbed.paths import REPORTS

REPORT = REPORTS / "testbed.md"
LLAVA_COMMAND = ("python -m testbed.demo --family llava_ov --methods ar,sd,specvlm,lvspec,lvspec+attention,"
                 "lvspec+target_prob,fly,random,sd@self --tasks caption --out reports/demo_llava_ov")
QWEN3_COMMAND = ("python -m testbed.demo --family qwen3_vl --methods ar,sd,specvlm,lvspec,lvspec+attention,"
                 "lvspec+target_prob,fly,random --out reports/demo_qwen3_vl")
#: The bars of the goal table that the demo's caption rows decide (section "Goal and bars").
TAU_RATIO_BAR, RETENTION_BAR, SPEEDUP_RATIO_BAR = 2.0, 0.99, 1.5
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED (?P<name>\w+)[^>]*-->\n)(?P<body>.*?)(<!-- END GENERATED (?P=name) -->)",
                    re.S)


def placeholder(what: str, command: str) -> str:
    return (f"> **To be regenerated.** {what} Run `{command}`, then `python -m testbed.report`; until then this "
            "section holds no figures.\n")


def _load(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _ci(value: Any, ci: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


# -- blocks -------------------------------------------------------------------------------------------

def noise_floor_block(doc: Optional[dict]) -> str:
    if doc is None:
        return placeholder("No noise-floor run is committed (reports/noise_floor.json).",
                           "python -m testbed.noise_floor")
    from testbed.noise_floor import markdown

    worst = min((c for comps in doc["tasks"].values() for c in comps if c["comparison"].startswith("bfloat16,")),
                key=lambda c: c["exact_match"] if c["exact_match"] is not None else 2.0, default=None)
    line = ""
    if worst is not None:
        line = (f"\nLeast stable bfloat16 rerun: exact match {_ci(worst['exact_match'], worst['exact_match_ci'])}, "
                f"retention {_ci(worst['retention'], worst['retention_ci'])}: a retention claim must clear this "
                "interval to mean anything.\n")
    return markdown(doc) + line


def demo_block(doc: Optional[dict], family: str = "qwen", command: str = "make demo") -> str:
    if doc is None or doc["meta"].get("family") != family or doc["meta"].get("split") != "test":
        return placeholder(f"No demo summary of the {family} pair on test clips with the variant registry is committed.",
                           command)
    from testbed.demo import table

    meta = doc["meta"]
    parts = [f"Command: `{meta['command']}` ({meta['minutes']} min; {meta['cores']} cores). {meta['note']}\n"]
    for task, rows in doc["tasks"].items():
        metric = rows[0].get("metric") if rows else "-"
        parts.append(f"#### {task} (test clips; score: {metric})\n\n{table(rows)}\n")
    return "\n".join(parts)


def sweep_block(doc: Optional[dict]) -> str:
    if doc is None or doc.get("meta", {}).get("split") != "val" or "selection" not in doc:
        return placeholder("The committed reports/testbed_sweep.json predates the validation split (it decoded test "
                           "clips with the earlier defaults) or is missing.", "python -m testbed.sweep")
    from tabulate import tabulate

    from testbed.sweep import COLUMNS, SPEED_CAVEAT, selection_markdown

    meta = doc["meta"]
    named = [r for r in doc["rows"] if r.get("variant")]
    winners = {json.dumps(s["params"], sort_keys=True) for s in doc["selection"]["families"].values() if s}
    extra = [r for r in doc["rows"] if not r.get("variant") and json.dumps(r["params"], sort_keys=True) in winners]
    body = tabulate([[cell(r) for _, cell in COLUMNS] for r in named + extra], headers=[h for h, _ in COLUMNS],
                    tablefmt="github", disable_numparse=True)
    head = (f"{meta['clips']} validation clips of {meta['task']}, {meta['minutes']} min, command: `{meta['command']}`. "
            f"Named rows and each family's winner below; every setting: [`testbed_sweep.md`](testbed_sweep.md). "
            f"{SPEED_CAVEAT}\n\n")
    return head + body + "\n\n" + selection_markdown(doc["selection"]).replace("## Selection", "#### Selection")


def bars_block(doc: Optional[dict]) -> str:
    if doc is None or doc["meta"].get("family") != "qwen" or "lvspec_testbed_caption" not in doc["tasks"]:
        return placeholder("The lvspec bars read the demo's caption table.", "make demo")
    rows = {r["variant"]: r for r in doc["tasks"]["lvspec_testbed_caption"]}
    lines = [f"From the demo's caption table (test clips). Bars: tau_ratio >= {TAU_RATIO_BAR} at retention >= "
             f"{RETENTION_BAR} (point estimates); decode speedup >= {SPEEDUP_RATIO_BAR}x the lossless counterpart's "
             "(ratio of the two pooled decode speedups over ar).", "",
             "| variant | vs | tau_ratio [95% CI] | retention [95% CI] | decode speedup / counterpart's | "
             f"tau_ratio >= {TAU_RATIO_BAR} at retention >= {RETENTION_BAR} | speedup >= {SPEEDUP_RATIO_BAR}x counterpart's |",
             "|---|---|---|---|---|---|---|"]
    for spec, r in rows.items():
        if not spec.startswith("lvspec") and spec != "random":
            continue
        other = rows.get(r.get("counterpart_variant") or "")
        speed = (r["speedup_decode_pooled"] / other["speedup_decode_pooled"]
                 if other and r.get("speedup_decode_pooled") and other.get("speedup_decode_pooled") else None)
        tau_ok = (r.get("tau_ratio") is not None and r.get("retention") is not None
                  and r["tau_ratio"] >= TAU_RATIO_BAR and r["retention"] >= RETENTION_BAR)
        lines.append(f"| {r['variant_label']} | {r.get('counterpart_variant') or '-'} | "
                     f"{_ci(r.get('tau_ratio'), r.get('tau_ratio_ci'))} | {_ci(r.get('retention'), r.get('retention_ci'))} | "
                     f"{_ci(speed, None)} | {'met' if tau_ok else 'not reached'} | "
                     f"{'-' if speed is None else 'met' if speed >= SPEEDUP_RATIO_BAR else 'not reached'} |")
    lv, rnd = rows.get("lvspec"), rows.get("random")
    if lv and rnd and lv.get("retention") is not None and rnd.get("retention") is not None:
        lines += ["", f"The paper's `lvspec` against its `random` control (same drafter input): tau_mean "
                      f"{lv['tau_mean']:.3f} vs {rnd['tau_mean']:.3f}, retention {_ci(lv['retention'], lv['retention_ci'])} "
                      f"vs {_ci(rnd['retention'], rnd['retention_ci'])}."]
    return "\n".join(lines) + "\n"


#: name -> (source file, renderer)
BLOCKS: dict[str, tuple[Path, Callable[[Optional[dict]], str]]] = {
    "noise_floor": (REPORTS / "noise_floor.json", noise_floor_block),
    "demo": (REPORTS / "demo" / "summary.json", demo_block),
    "sweep": (REPORTS / "testbed_sweep.json", sweep_block),
    "demo_llava": (REPORTS / "demo_llava_ov" / "summary.json",
                   lambda doc: demo_block(doc, "llava_ov", LLAVA_COMMAND)),
    "demo_qwen3": (REPORTS / "demo_qwen3_vl" / "summary.json",
                   lambda doc: demo_block(doc, "qwen3_vl", QWEN3_COMMAND)),
    "bars": (REPORTS / "demo" / "summary.json", bars_block),
}


def regenerate(text: str, blocks: dict[str, tuple[Path, Callable]] = BLOCKS) -> str:
    """`text` with every GENERATED block rendered from its source; an unknown block name is an error."""
    def render(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            raise SystemExit(f"reports/testbed.md has a GENERATED block {name!r} that testbed/report.py does not know "
                             f"({', '.join(blocks)})")
        source, renderer = blocks[name]
        return match.group(1) + renderer(_load(source)) + match.group(4)

    return _BLOCK.sub(render, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", type=Path, default=REPORT)
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from what its sources give")
    a = p.parse_args(argv)
    text = a.file.read_text()
    found = {m["name"] for m in _BLOCK.finditer(text)}
    if not found:
        raise SystemExit(f"{a.file}: no GENERATED blocks")
    new = regenerate(text)
    if a.check:
        if new != text:
            print(f"{a.file} is out of date with its sources: run python -m testbed.report", file=sys.stderr)
            return 1
        print(f"{a.file}: {len(found)} generated blocks up to date")
        return 0
    a.file.write_text(new)
    print(f"regenerated {', '.join(sorted(found))} in {a.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
