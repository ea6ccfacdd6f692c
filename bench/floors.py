"""Each bench figure against its floor: the table "Floors" in bench/README.md.

Reads the benches' JSON lines (files given, or standard input; other lines are ignored)
and prints a table of figure, floor, measured value and verdict. A bench that reports
several networks (gossip: 4 and 8 peers) is matched by the selector in the table's
``where`` column. Exit status 1 when a figure misses its floor or is absent, 0 otherwise.
A bench that says it was skipped (gpu.py without torch) counts as absent only where a
floor names it. Run: .venv/bin/python bench/floors.py .bench/*.out   (make bench does)
"""

from __future__ import annotations

import argparse
import json
import operator
import re
import sys
from pathlib import Path
from typing import Any

README = Path(__file__).with_name("README.md")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
ROW = re.compile(r"^\|\s*(\w+)\s*\|\s*([^|]*?)\s*\|\s*(\w+)\s*\|\s*(>=|<=|==|>|<)\s*([-\d.]+)\s*\|")


def read_floors(readme: Path = README) -> list[dict[str, Any]]:
    """The rows of the README's "## Floors" table: bench, where (k=v,...), figure, op, value."""
    text = readme.read_text()
    start = text.index("## Floors")
    end = text.find("\n## ", start + 1)
    floors = []
    for line in text[start : end if end > 0 else len(text)].splitlines():
        m = ROW.match(line)
        if m:
            bench, where, figure, op, value = m.groups()
            conds = dict(c.split("=", 1) for c in where.split(",") if "=" in c)
            floors.append({"bench": bench, "where": conds, "figure": figure, "op": op, "value": float(value)})
    if not floors:
        raise SystemExit(f"no floors found under '## Floors' in {readme}")
    return floors


def read_results(lines: list[str]) -> list[dict[str, Any]]:
    """Every JSON object with a "bench" key; a record with "networks" also yields each
    network as a record of the same bench."""
    out: list[dict[str, Any]] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or "bench" not in doc:
            continue
        out.append(doc)
        for net in doc.get("networks", []):
            out.append({"bench": doc["bench"], **net})
    return out


def _matches(record: dict[str, Any], where: dict[str, str]) -> bool:
    return all(str(record.get(k)) == v for k, v in where.items())


def check(floors: list[dict[str, Any]], results: list[dict[str, Any]]) -> tuple[list[list[str]], bool]:
    rows, ok = [], True
    for f in floors:
        found = [r for r in results if r["bench"] == f["bench"] and _matches(r, f["where"]) and f["figure"] in r]
        where = ",".join(f"{k}={v}" for k, v in f["where"].items()) or "-"
        floor = f"{f['op']} {f['value']:g}"
        if not found:
            skipped = next((r.get("skipped") for r in results if r["bench"] == f["bench"] and r.get("skipped")), None)
            rows.append([f["bench"], where, f["figure"], floor, "-", f"ABSENT ({skipped})" if skipped else "ABSENT"])
            ok = False
            continue
        value = found[-1][f["figure"]]  # the latest record of that bench
        passed = value is not None and OPS[f["op"]](float(value), f["value"])
        ok &= passed
        rows.append([f["bench"], where, f["figure"], floor, str(value), "ok" if passed else "MISSED"])
    return rows, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="bench outputs (default: standard input)")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    lines = [ln for f in args.files for ln in f.read_text().splitlines()] if args.files else sys.stdin.readlines()
    rows, ok = check(read_floors(args.readme), read_results(lines))
    header = ["bench", "where", "figure", "floor", "measured", "verdict"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("all floors met" if ok else "FLOORS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
