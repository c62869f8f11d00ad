"""A study's numbers come from its files. The pages that report studies quote results only in tables
that tests/test_readme_table.py checks against docs/results (``<!-- from docs/results/... -->``), so
their prose carries no measured number of its own (no decimal: rates, ρ, p, AUROC), and no module
docstring quotes a study."""
import ast
import re

from helpers import ROOT

# A decimal that is not part of a word, a path, a fraction or a version (56.2, 0.85, −0.92, 1e-7 stays).
DECIMAL = re.compile(r"(?<![\w./-])[-−+]?\d+\.\d+(?![\w/.])")


def prose(text: str):
    """(line number, line) of the prose: not in fenced or indented code, a table, a comment or a heading."""
    fenced = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith(("    ", "|", "<!--", "#")):
            continue
        yield i, re.sub(r"`[^`]*`", "", line)   # inline code is a command or a name, not a result


def family_section(text: str) -> str:
    return text.split("## The flat-maxima family at equal compute", 1)[1].split("\n## ", 1)[0]


def test_study_pages_quote_results_only_from_files():
    pages = {"docs/studies.md": (ROOT / "docs" / "studies.md").read_text(),
             "docs/flatness.md": (ROOT / "docs" / "flatness.md").read_text(),
             "README.md (the family)": family_section((ROOT / "README.md").read_text())}
    found = [f"{name}:{i}: {m.group(0)} in {line.strip()[:90]!r}" for name, text in pages.items()
             for i, line in prose(text) for m in DECIMAL.finditer(line)]
    assert not found, "numbers in prose (quote them from a docs/results table instead):\n" + "\n".join(found)
    assert "<!-- from docs/results/" in pages["docs/studies.md"]


def test_the_rule_catches_a_number_in_prose():
    """The broken page this test exists for: a rate written into a sentence."""
    page = "Intro.\n\n| a | 56.2 |\n\n    flatbench x=0.5\n\nPGN reaches 61.4 against 56.2 (Holm p 0.019).\n"
    assert [m.group(0) for _, line in prose(page) for m in DECIMAL.finditer(line)] == ["61.4", "56.2", "0.019"]


def test_no_module_docstring_quotes_a_study():
    hits = []
    for path in sorted((ROOT / "flatbench").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                if re.search(r"docs/results|Holm p|studies\.md|\bρ = [−-]?0\.\d", doc):
                    hits.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}")
    assert not hits, hits
