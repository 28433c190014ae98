"""bench/RESULTS.md: each benchmark owns one section between its markers and replaces only that."""

from __future__ import annotations

from pathlib import Path

RESULTS_FILE = Path(__file__).with_name("RESULTS.md")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def replace_section(name: str, section: str, path: Path = RESULTS_FILE) -> None:
    """Put ``section`` (which starts and ends with the markers of ``name``) in place of the old
    one, or append it; the rest of the file stays as it is."""
    begin_marker, end_marker = markers(name)
    text = path.read_text("utf-8") if path.exists() else "# Benchmark results\n"
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin >= 0 and end > begin:
        text = text[:begin] + section + text[end + len(end_marker) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, "utf-8")
