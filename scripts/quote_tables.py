"""Refresh every table a page quotes from a report file.

    python scripts/quote_tables.py            # rewrite the quoted tables of README.md and docs/*.md
    python scripts/quote_tables.py --check    # exit 1 when a quoted table differs from its file

A page quotes a report's table with a marker line, and the table follows it:

    <!-- from docs/results/flat_family_seeds/table.md -->          (every table of the file)
    <!-- from docs/results/flat_family_seeds/significance.md table 2 -->   (its second table)

After a study is rerun, this script puts the new tables into the pages; tests/test_readme_table.py
checks that every quoted table is its file's, line for line, so prose never has to repeat a number.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- from (docs/results/\S+?)(?: table (\d+))? -->$")


def tables_of(text: str) -> list:
    out, cur = [], []
    for ln in text.splitlines() + [""]:
        if ln.startswith("|"):
            cur.append(ln)
        elif cur:
            out.append(cur)
            cur = []
    return out


def refresh(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        out.append(lines[i])
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        tables = tables_of((ROOT / m.group(1)).read_text())
        n = int(m.group(2)) if m.group(2) else 0
        if n > len(tables):
            raise SystemExit(f"{m.group(1)} has {len(tables)} tables, not {n}")
        out += tables[n - 1] if n else [ln for t in tables for ln in t]
        while i < len(lines) and lines[i].startswith("|"):   # the table quoted before
            i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="report pages whose quoted tables differ; write nothing")
    args = ap.parse_args()
    stale = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        new = refresh(text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    for p in stale:
        print(f"{'stale' if args.check else 'refreshed'}: {p}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
