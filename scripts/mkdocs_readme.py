"""MkDocs hook (mkdocs.yml: hooks): the site's home page is the README itself, so the project page and
the site's front page cannot drift apart. Its links into docs/ are rewritten to the site's own pages
(``docs/attacks.md`` -> ``attacks.md``), and its links to the repository's own files (LICENSE,
CHANGELOG.md, CITATION.cff) to those files in the repository (``repo_url``); nothing is written to disk."""
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def home_page(text: str, repo_url: str = "") -> str:
    """The README as the site's index.md: links into docs/ made relative to docs/, links to other files
    of the repository made links into it."""
    text = re.sub(r"\]\(docs/", "](", text)

    def outside(m):
        target = m.group(1)
        if repo_url and (ROOT / target).is_file() and not target.startswith("docs/"):
            return f"]({repo_url.rstrip('/')}/blob/main/{target})"
        return m.group(0)

    return re.sub(r"\]\(([A-Za-z0-9_.-]+)\)", outside, text)


def on_files(files, config):
    files.append(File.generated(config, "index.md", content=home_page(README.read_text(), config.get("repo_url") or "")))
    return files


# Sphinx roles in docstrings (``:func:`~flatbench.create_attack```): mkdocstrings leaves them as text. On
# the rendered page each becomes the object's name, linked where the page documents it.
ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc|obj):<code>(~?)(\.?)([^<]*)</code>")


def on_page_content(html, page, config, files):
    ids = set(re.findall(r'id="([^"]+)"', html))

    def link(m):
        target = m.group(3)
        name = target.split(".")[-1] if (m.group(1) or m.group(2)) else target
        anchor = next((a for a in (target, f"flatbench.{target}") if a in ids), None)
        return f'<a href="#{anchor}"><code>{name}</code></a>' if anchor else f"<code>{name}</code>"

    return ROLE.sub(link, html)
