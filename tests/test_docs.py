"""Every citation of the design notes in the code and README points at a section or entry that
docs/reference.md or docs/deviations.md has.

Citations take the forms "docs/reference.md §4.4" (also "§0.13", "§10 item 27", "§1.4-1.5", and
lists such as "§4.3, §4.5") and "docs/deviations.md 13" (also "6-10", "8, 12"); the older forms
"REFERENCE §..." and "DECISIONS n" are checked the same way.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = ["README.md", "jointist_jax", "configs", "data_pipelines", "launch", "benchmarks", "tests", "docs"]

# A reference citation: the marker, then one or more section numbers separated by commas,
# semicolons or "and", each optionally with "item N" / "surprise N" or a range.
_SECTION = r"§\d+(?:\.\d+)?(?:\s*(?:item|surprise)\s+\d+)?(?:\s*[-–]\s*\d+(?:\.\d+)?)?"
_REFERENCE = re.compile(rf"(?:REFERENCE|(?:docs/)?reference\.md)\s+({_SECTION}(?:\s*(?:,|/|and)\s*{_SECTION})*)")
_DEVIATION = re.compile(r"(?:DECISIONS|(?:docs/)?deviations\.md)\s+(\d+(?:\s*[-–]\s*\d+)?(?:\s*(?:,|and)\s*\d+)*)")


def reference_sections() -> set[str]:
    """Section numbers of reference.md: headings "## 4." / "### 4.4" and items "**10.27**"."""
    text = (DOCS / "reference.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.M))
    sections |= set(re.findall(r"^- \*\*(\d+\.\d+)\*\*", text, flags=re.M))
    return sections


def deviation_entries() -> set[str]:
    """Entry numbers of deviations.md: paragraphs starting "**13. ...".""" 
    return set(re.findall(r"^\*\*(B?\d+)\. ", (DOCS / "deviations.md").read_text(), flags=re.M))


def _files():
    for name in SOURCES:
        path = ROOT / name
        yield from ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".py", ".md")))


def _expand_sections(cited: str) -> list[str]:
    out = []
    for part in re.findall(_SECTION, cited):
        number = re.match(r"§(\d+(?:\.\d+)?)", part).group(1)
        item = re.search(r"(?:item|surprise)\s+(\d+)", part)
        if item:
            out.append(f"{number}.{item.group(1)}")
            continue
        out.append(number)
        upper = re.search(r"[-–]\s*(\d+(?:\.\d+)?)$", part)
        if upper:
            out.append(upper.group(1))
    return out


def _expand_entries(cited: str) -> list[str]:
    out = []
    for low, high in re.findall(r"(\d+)(?:\s*[-–]\s*(\d+))?", cited):
        out.extend(str(n) for n in range(int(low), int(high or low) + 1))
    return out


def test_docs_have_every_section_and_entry_the_project_mirrors():
    sections = reference_sections()
    expected = {str(n) for n in range(12)} | {"0.13", "10.27", "11.3", "7.5", "4.5", "3.5", "2.4", "1.6"}
    assert expected <= sections, sorted(expected - sections)
    entries = deviation_entries()
    assert {str(n) for n in range(1, 32)} | {"B1", "B2"} <= entries


def test_every_citation_resolves():
    sections, entries = reference_sections(), deviation_entries()
    missing = []
    count = 0
    for path in _files():
        text = path.read_text(errors="replace")
        for match in _REFERENCE.finditer(text):
            for number in _expand_sections(match.group(1)):
                count += 1
                if number not in sections:
                    missing.append(f"{path.relative_to(ROOT)}: {match.group(0)!r} -> §{number}")
        for match in _DEVIATION.finditer(text):
            for number in _expand_entries(match.group(1)):
                count += 1
                if number not in entries:
                    missing.append(f"{path.relative_to(ROOT)}: {match.group(0)!r} -> {number}")
    assert count > 100, "the citation patterns no longer find the project's citations"
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("cited, expected", [
    ("§4.3, §4.5, §7.5", ["4.3", "4.5", "7.5"]),
    ("§10 item 27", ["10.27"]),
    ("§0 surprise 13", ["0.13"]),
    ("§1.4-1.5", ["1.4", "1.5"]),
])
def test_citation_forms_are_understood(cited, expected):
    assert _expand_sections(cited) == expected
