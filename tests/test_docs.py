"""The documentation site (issue 35): `make docs` builds docs/ with MkDocs in strict mode, and the
home page is the README itself (scripts/mkdocs_readme.py). No network: the theme fetches no fonts at
build time and mkdocstrings reads the package's source."""
import re
import shutil

from helpers import ROOT, command


def _build(config, site):
    return command(["mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                   cwd=ROOT, timeout=300)


def test_the_site_builds_strict_with_the_readme_as_home_and_the_api_reference(tmp_path):
    p = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Quick start" in home and 'href="attacks/"' in home   # the README, its docs/ links made the site's
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "create_attack" in api and "trajectory" in api        # generated from the docstrings
    # Sphinx roles are rendered: the name, linked where the page documents it (regression: raw ":func:").
    assert not re.search(r":(mod|class|func|meth|attr|data):<code>", api)
    assert '<a href="#flatbench.create_attack"><code>create_attack</code></a>' in api
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in [*(ROOT / "docs").glob("*.md"), *(ROOT / "docs").glob("notebooks/*.md")]}
    assert pages == set(nav) - {"index.md"}, "every page of docs/ is in the site's nav, and only those"


def test_a_broken_link_fails_the_build(tmp_path):
    """The strictness is real: the same site with one link to a missing page does not build."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    page = docs / "tests.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no_such_page.md).\n")
    config = tmp_path / "mkdocs.yml"
    text = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    text = text.replace("paths: [.]", f"paths: [{ROOT}]").replace("- scripts/mkdocs_readme.py", f"- {ROOT}/scripts/mkdocs_readme.py")
    config.write_text(text)
    p = _build(config, tmp_path / "site")
    assert p.returncode != 0 and "no_such_page.md" in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
