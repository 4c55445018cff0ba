"""The README and the pages of docs/ hold on a fresh clone: their figure commands run on the
committed results files, their relative links point to files of the repository, and every docs/
path the README names is committed."""

from __future__ import annotations

import fnmatch
import glob
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from certify.cli.plot import main as plot_main

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
PAGES = [README, *sorted((REPOSITORY / "docs").glob("*.md"))]

# [text](target) and ![alt](target), target without spaces, optionally followed by a title.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def page_name(page: Path) -> str:
    return page.relative_to(REPOSITORY).as_posix()


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def plot_commands() -> list[tuple[str, str]]:
    """(page, command line) for every `certify-plot` command of the README and of docs/*.md that
    draws a docs/ figure."""
    return [(page_name(page), line.strip())
            for page in PAGES for line in page.read_text(encoding="utf-8").splitlines()
            if line.strip().startswith("certify-plot docs/") and "--out docs/" in line]


def relative_links() -> list[tuple[str, str]]:
    """(page, target) for every link of the README and of docs/*.md that is not a URL."""
    links = []
    for page in PAGES:
        for line in prose_lines(page):
            for target in LINK.findall(line):
                if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
                    links.append((page_name(page), target))
    return links


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a Markdown page's headings: lower case, punctuation dropped,
    spaces to hyphens, repeats numbered."""
    anchors: set[str] = set()
    for line in prose_lines(page):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            candidate, number = slug, 1
            while candidate in anchors:
                candidate, number = f"{slug}-{number}", number + 1
            anchors.add(candidate)
    return anchors


def tracked_files() -> set[str] | None:
    """The paths git tracks, or None outside a git checkout."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True,
                                 check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return {path for path in listing.stdout.decode("utf-8").split("\0") if path}


def test_the_pages_name_their_figure_commands():
    assert plot_commands(), "the README draws its figures with certify-plot from docs/"
    assert any(page == "README.md" for page, _ in plot_commands())


@pytest.mark.parametrize(("page", "command"), plot_commands())
def test_plot_command_runs_on_the_committed_results(page, command, tmp_path, monkeypatch, capsys):
    words = shlex.split(command)[1:]
    out = Path(words[words.index("--out") + 1])
    words[words.index("--out") + 1] = str(tmp_path / out.name)  # never touch the committed figure
    monkeypatch.chdir(REPOSITORY)
    arguments = [match for word in words for match in (sorted(glob.glob(word)) or [word])]
    assert plot_main(arguments) == 0, f"{page}: {capsys.readouterr().err}"
    assert (tmp_path / out.name).stat().st_size > 10_000
    assert (REPOSITORY / out).is_file(), f"{page} shows {out}, which is not committed"


def test_the_pages_have_relative_links():
    assert any(page == "README.md" and target.startswith("docs/")
               for page, target in relative_links())


@pytest.mark.parametrize(("page", "target"), relative_links())
def test_relative_link_points_to_a_file_of_the_repository(page, target):
    path, _, anchor = target.partition("#")
    destination = ((REPOSITORY / page).parent / path).resolve() if path else REPOSITORY / page
    assert destination.is_relative_to(REPOSITORY), f"{page} links outside the repository: {target}"
    name = destination.relative_to(REPOSITORY).as_posix()
    tracked = tracked_files()
    in_git = tracked is not None and (name in tracked
                                      or any(file.startswith(name + "/") for file in tracked))
    assert in_git or destination.exists(), f"{page} links to {target}, which is not in the tree"
    if anchor and destination.suffix == ".md":
        assert anchor in heading_anchors(destination), (
            f"{page} links to {target}, but {name} has no heading with that anchor"
        )


def test_every_docs_path_the_readme_names_is_committed():
    tracked = tracked_files()
    if tracked is None:
        pytest.skip("not a git checkout")
    text = README.read_text(encoding="utf-8")
    named = {match.rstrip(".,;:") for match in re.findall(r"docs/[\w.*/-]*", text)}
    assert named, "the README names no docs/ path"
    missing = [path for path in sorted(named)
               if not any(fnmatch.fnmatch(file, path) or file.startswith(path.rstrip("/") + "/")
                          for file in tracked)]
    assert not missing, f"the README names docs/ paths that git does not track: {missing}"


def test_the_docs_cite_papers_not_tickets():
    pattern = re.compile(r"\b(issue|ticket)s?\s*#?\d+", re.IGNORECASE)
    for page in PAGES:
        found = pattern.findall(page.read_text(encoding="utf-8"))
        assert not found, f"{page_name(page)} refers to a ticket"


def readme_python_blocks() -> list[str]:
    """The README's Python examples that run as written (a block naming `my_network` shows where
    the reader's own network goes, and is not run)."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                        flags=re.DOTALL | re.MULTILINE)
    return [block for block in blocks if "my_network" not in block]


def test_the_readme_has_python_examples():
    assert len(readme_python_blocks()) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("block", readme_python_blocks())
def test_readme_python_example_runs(block, monkeypatch, capsys):
    monkeypatch.chdir(REPOSITORY)  # the examples read docs/results/ from the repository root
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
