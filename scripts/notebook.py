"""Run a notebook's code cells in order, in this process, and store what they print and draw: the
notebook with its outputs, and a Markdown page of it for the documentation site (its figures as PNG
files beside it). No Jupyter is needed: one namespace for every cell, the last expression of a cell
shown as Jupyter shows it, every open matplotlib figure saved after its cell. The CPU kernel paths
are pinned for this process as the command line pins them (flatbench/core/kernels.py), so the outputs
are the command line's numbers.

    python scripts/notebook.py docs/notebooks/quickstart.ipynb --md docs/notebooks/quickstart.md

Exits non-zero, naming the cell, when a cell raises.
"""
import argparse
import ast
import base64
import contextlib
import io
import json
import sys
from pathlib import Path


def run_notebook(nb: dict) -> dict:
    """The notebook with every code cell executed in order and its outputs filled in (a new dict)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns: dict = {"__name__": "__main__"}
    out = json.loads(json.dumps(nb))
    count = 0
    for i, cell in enumerate(out["cells"]):
        if cell["cell_type"] != "code":
            continue
        count += 1
        source = "".join(cell["source"])
        tree = ast.parse(source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        buf, outputs = io.StringIO(), []
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(tree, f"<cell {i}>", "exec"), ns)
                value = eval(compile(ast.Expression(last.value), f"<cell {i}>", "eval"), ns) if last else None
        except Exception as exc:
            raise RuntimeError(f"cell {i} raised {type(exc).__name__}: {exc}") from exc
        if buf.getvalue():
            outputs.append({"output_type": "stream", "name": "stdout", "text": buf.getvalue().splitlines(keepends=True)})
        if value is not None and not _is_artist(value):
            data = {"text/plain": repr(value)}
            if hasattr(value, "to_html"):
                data["text/html"] = value.to_html()
            if hasattr(value, "to_html") and hasattr(value, "columns"):
                data["text/markdown"] = frame_markdown(value)
            outputs.append({"output_type": "execute_result", "execution_count": count, "metadata": {}, "data": data})
        for num in plt.get_fignums():
            png = io.BytesIO()
            plt.figure(num).savefig(png, format="png", dpi=100)
            outputs.append({"output_type": "display_data", "metadata": {},
                            "data": {"image/png": base64.b64encode(png.getvalue()).decode(), "text/plain": "<Figure>"}})
        plt.close("all")
        cell["outputs"], cell["execution_count"] = outputs, count
    return out


def frame_markdown(df) -> str:
    """A DataFrame as a Markdown table (its index first), numbers as pandas prints them."""
    cells = df.astype(object).where(df.notna(), "")
    head = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * len(df.columns)]
    for idx, row in zip(df.index, cells.itertuples(index=False)):
        lines.append("| " + " | ".join([str(idx)] + [f"{v:g}" if isinstance(v, float) else str(v) for v in row]) + " |")
    return "\n".join(lines)


def _is_artist(value) -> bool:
    return type(value).__module__.startswith("matplotlib")


def markdown(nb: dict, images: Path, stem: str) -> str:
    """A Markdown page of an executed notebook: text cells as they are, code in fences, outputs below."""
    parts, k = [], 0
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(src)
            continue
        parts.append(f"```python\n{src}\n```")
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                parts.append("```text\n" + "".join(o["text"]).rstrip() + "\n```")
            elif "image/png" in o.get("data", {}):
                k += 1
                name = f"{stem}_{k}.png"
                (images / name).write_bytes(base64.b64decode(o["data"]["image/png"]))
                parts.append(f"![figure {k}]({name})")
            elif "text/markdown" in o.get("data", {}):
                parts.append(o["data"]["text/markdown"])
            else:
                parts.append("```text\n" + o["data"]["text/plain"] + "\n```")
    return "\n\n".join(parts) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--md", type=Path, default=None, help="also write this Markdown page (figures beside it)")
    ap.add_argument("--out", type=Path, default=None, help="write the executed notebook here (default: in place)")
    args = ap.parse_args()
    from flatbench.core.kernels import pin_kernels

    pin_kernels()   # before torch's first operation, as the command line does
    try:
        done = run_notebook(json.loads(args.notebook.read_text()))
    except RuntimeError as exc:
        print(f"{args.notebook}: {exc}", file=sys.stderr)
        return 1
    (args.out or args.notebook).write_text(json.dumps(done, indent=1) + "\n")
    if args.md:
        args.md.write_text(markdown(done, args.md.parent, args.md.stem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
