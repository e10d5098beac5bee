"""The README and docs/ stand alone: every file they point to is in the repository, and
nothing refers to documents a clone does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
#: `path/like/this.ext` in backticks: a file of the repository.
PATH_IN_BACKTICKS = re.compile(r"`((?:[\w.-]+/)+[\w.-]+\.(?:md|py|yml|txt|json|toml|cfg))`")
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_document_points_to_exists(document):
    text = document.read_text()
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        assert (document.parent / target).exists(), f"{document.name} links to {target}, which is not in the repository"
    for path in PATH_IN_BACKTICKS.findall(text):
        if path.startswith(("var/", "MEDIA_ROOT/", "images/")) or "<" in path:
            continue  # made at run time
        assert (ROOT / path).exists() or (document.parent / path).exists(), f"{document.name} names {path}, not in the repository"


def test_the_docs_cover_what_a_new_user_needs():
    docs = {p.stem for p in (ROOT / "docs").glob("*.md")}
    assert {"bundles", "stages", "deployment", "querying"} <= docs
    readme = (ROOT / "README.md").read_text()
    assert "docker compose -f docker/compose.yml up" in readme and "make demo" in readme and "make test" in readme
    for name in docs:
        assert f"docs/{name}.md" in readme, f"the README does not lead to docs/{name}.md"


def test_no_tracked_file_refers_to_documents_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".html", ".txt", ".yml", ".toml"} or not path.exists():
            continue
        text = path.read_text(errors="replace")
        for outside in ("DESIGN.md", "ROADMAP.md", "../shared"):
            assert outside not in text or name == "tests/test_docs.py", f"{name} mentions {outside}"
