"""What the scripts that write a documentation page from the code share: write the page, or with
``--check`` exit 1 when the page on disk is not what the code gives now."""
import argparse
import sys
from pathlib import Path
from typing import Callable


def page_main(doc: str, page: Path, make: Callable[[], str], script: str) -> int:
    """The command line of a page script: ``make()`` is the page's text; ``script`` how to rerun it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--check", action="store_true", help=f"compare with {page.name} instead of writing it")
    args = ap.parse_args()
    text = make()
    if args.check:
        if not page.exists() or page.read_text() != text:
            print(f"{page} is out of date: run python {script}", file=sys.stderr)
            return 1
        return 0
    page.write_text(text)
    print(f"wrote {page}")
    return 0
