"""The repository describes itself: every citation of docs/method.md names a section it has, and
nothing cites the method spec that lives outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO_ROOT

CITATION = re.compile(r"docs/method\.md,?\s+sections?\s+(\d+(?:(?:,\s*and\s+|,\s*|\s+and\s+)\d+)*)")
OUTSIDE_SPEC = re.compile(r"\bSPEC\b|shared/SPEC\.md")
SCANNED = ("meshinv", "scripts", "tests", "bench", "configs", "docs")
SUFFIXES = {".py", ".yaml", ".md", ".sh"}


def _tree_files() -> list[Path]:
    files = [REPO_ROOT / "README.md"]
    for folder in SCANNED:
        files += [p for p in (REPO_ROOT / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_every_method_citation_names_an_existing_section():
    method = (REPO_ROOT / "docs" / "method.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", method, flags=re.MULTILINE)}
    assert sections == set(range(1, 10))
    cited, wrong = 0, []
    for path in _tree_files():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            for number in map(int, re.findall(r"\d+", match.group(1))):
                cited += 1
                if number not in sections:
                    wrong.append(f"{path.relative_to(REPO_ROOT)}: {match.group(0)!r}")
    assert not wrong, "citations of sections docs/method.md does not have:\n" + "\n".join(wrong)
    assert cited >= 40  # the code cites it throughout; a broken pattern would find none


def test_nothing_cites_the_spec_outside_the_repository():
    outside = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
               for path in _tree_files()
               for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
               if OUTSIDE_SPEC.search(line)]
    assert not outside, "cite docs/method.md instead:\n" + "\n".join(outside)
