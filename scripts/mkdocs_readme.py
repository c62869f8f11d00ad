"""MkDocs hook (mkdocs.yml: hooks): the site's home page is the README itself, so the project page and
the site's front page cannot drift apart. Its links into docs/ are rewritten to the site's own pages
(``docs/attacks.md`` -> ``attacks.md``); nothing is written to disk."""
import re
from pathlib import Path

from mkdocs.structure.files import File

README = Path(__file__).resolve().parent.parent / "README.md"


def home_page(text: str) -> str:
    """The README as the site's index.md: links into docs/ made relative to docs/."""
    return re.sub(r"\]\(docs/", "](", text)


def on_files(files, config):
    files.append(File.generated(config, "index.md", content=home_page(README.read_text())))
    return files
