"""The repository stands on its own.

A reader of the repository has only the repository: code, docs and configuration must not point to
the team's private notes (the design and domain notes, or the shared folder next to the checkout).
What the code relies on is written in docs/ instead. And every relative link of the README and
docs/*.md must lead to a file that is in the repository.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Written with escapes so that this file does not match itself.
OUTSIDE_REFERENCE = re.compile(r"DESIGN\.md|DOMAIN\.md|\.\./shared")

# [text](target) and [text](target "title"); reference definitions `[label]: target`.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
FENCE = re.compile(r"^\s{0,3}(```|~~~).*?^\s{0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@cache
def tracked_files() -> tuple[str, ...]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error})")
    return tuple(sorted(name for name in out.decode().split("\0") if name))


def outside_references() -> list[str]:
    found = []
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file() or path.is_symlink():
            continue  # deleted in the working tree, or a link to something checked on its own
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_REFERENCE.search(line):
                found.append(f"{name}:{number}: {line.strip()[:160]}")
    return found


def markdown_files() -> list[str]:
    return [n for n in tracked_files() if n == "README.md" or re.fullmatch(r"docs/[^/]+\.md", n)]


def relative_links(markdown: str) -> list[str]:
    """Targets of the relative links of a markdown text (code blocks and code spans are not links)."""
    prose = CODE_SPAN.sub("", FENCE.sub("", markdown))
    targets = [m.group(1) for m in INLINE_LINK.finditer(prose)]
    targets += [m.group(1) for m in REFERENCE_LINK.finditer(prose)]
    relative = []
    for target in targets:
        target = target.removeprefix("<").removesuffix(">")
        if SCHEME.match(target) or target.startswith(("#", "//")):
            continue  # a URL, or an anchor in the same page
        path = re.split(r"[#?]", target, maxsplit=1)[0]
        if path:
            relative.append(path)
    return relative


def broken_links() -> list[str]:
    tracked = set(tracked_files())
    tracked_dirs = {str(parent) for name in tracked for parent in Path(name).parents}
    broken = []
    for name in markdown_files():
        source = ROOT / name
        if not source.is_file():
            continue
        for target in relative_links(source.read_text(encoding="utf-8")):
            base = ROOT if target.startswith("/") else source.parent
            resolved = (base / target.lstrip("/")).resolve()
            try:
                relative = resolved.relative_to(ROOT).as_posix()
            except ValueError:
                broken.append(f"{name}: {target} (outside the repository)")
                continue
            if not resolved.exists() or (relative not in tracked and relative not in tracked_dirs):
                broken.append(f"{name}: {target} (no such file in the repository)")
    return broken


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = outside_references()
    assert not found, (
        "these lines point to notes outside the repository; write what they rely on into docs/ and "
        "point there instead:\n" + "\n".join(found)
    )


def test_relative_markdown_links_resolve_to_repository_files() -> None:
    assert markdown_files(), "README.md and docs/*.md not found among the tracked files"
    broken = broken_links()
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_link_extraction() -> None:
    text = """See [a](docs/a.md#part), [b](<b c.md> "t"), [web](https://x.org/y.md), [top](#top),
[mail](mailto:x@y.z) and ![img](img/p.png).
`[not](a-link.md)`
```
[also not](fenced.md)
```
[ref]: ../other.md
"""
    assert relative_links(text) == ["docs/a.md", "b c.md", "img/p.png", "../other.md"]


def test_outside_reference_pattern() -> None:
    design, domain, shared = "DESIGN" + ".md", "DOMAIN" + ".md", ".." + "/shared/"
    for line in (f"see {design}", f"({domain}, Storage)", f"{shared}notes.txt"):
        assert OUTSIDE_REFERENCE.search(line)
    assert not OUTSIDE_REFERENCE.search("docs/architecture.md and docs/exposure-model.md")
