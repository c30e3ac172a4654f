"""Named sections of a Markdown file that a tool rewrites, leaving the rest of the file alone.

BENCHMARKS.md is written by the benchmark and by the accuracy runs, each in its own section, and edited
by hand around them; a section is what lies between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
"""

from __future__ import annotations

from pathlib import Path


def has_section(path: Path, name: str) -> bool:
    """Whether `path` holds both markers of the section, in order."""
    text = path.read_text() if path.is_file() else ""
    begins = text.find(f"<!-- {name}:start -->")
    return begins >= 0 and text.find(f"<!-- {name}:end -->", begins) >= 0


def replace_section(path: Path, name: str, body: str, at_start: bool = False) -> None:
    """Put `body` between the section's markers, or add the section (at the end, or at the start of the
    file with `at_start`) if the file has no such section yet. A blank line always precedes the end
    marker, so a table that ends the body is not continued by the marker."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = start + "\n" + body.rstrip("\n") + "\n\n" + end
    text = path.read_text() if path.is_file() else ""
    begins = text.find(start)
    ends = text.find(end, begins) if begins >= 0 else -1
    if ends >= 0:
        text = text[:begins] + section + text[ends + len(end) :]
    elif not text.strip():
        text = section + "\n"
    elif at_start:
        text = section + "\n\n" + text.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
