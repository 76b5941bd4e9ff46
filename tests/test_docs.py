"""The documentation is tested: README.md and docs/*.md examples run as written, and --help agrees with docs.

Conventions for whoever writes these pages:

* Every ```python block runs as written in its own `python` process, from a scratch directory
  whose entries link to the repository root's top-level entries (so `samples/chelsea.png` works
  and whatever an example writes stays out of the repository), with this checkout on PYTHONPATH
  and no EDGERUN_* variables set. It must exit 0.
* A ```python block that mentions EDGERUN_URL talks to a running `edgerun serve`: the test starts
  one (default models, 127.0.0.1, a free port) and sets EDGERUN_URL=http://127.0.0.1:PORT. Such an
  example reads `os.environ.get("EDGERUN_URL", "http://127.0.0.1:8000")`, so it also runs as
  written against a server a reader started with `edgerun serve`.
* A ```sh block whose first command line starts with `edgerun` (or `$ edgerun`) is run by bash in
  the same kind of scratch directory (`edgerun` is this checkout's `python -m edgerun`).
  With `$ ` prompts, the lines after a command up to the next prompt are its expected output,
  compared with its stdout (stdout then stderr when it fails). The exit status must be 0 unless
  the expected output has a line starting with `edgerun: error:` (then it must be 1).
  Matching: a line `...` stands for any number of lines (also none); a line ending in `...`
  matches any line that starts with the text before the `...`; every other line must be equal
  (trailing spaces ignored). A block without prompts must exit 0; its output is not compared.
* `<!-- output: varies -->` on the line before a block: run it and check the exit status only.
* `<!-- not run: REASON -->` on the line before a block: not run (a server that waits for
  Ctrl-C, a command that takes more than a few seconds). Keep these few.
* ```text, ```json, ```toml and unlabelled blocks are never run; use ```text for usage synopses.
* Options: every long option of every `edgerun` command and subcommand (the argparse tree from
  edgerun.cli.build_parser) must appear in one of that command's pages (COMMAND_PAGES below); every
  `--flag` written after `edgerun COMMAND` in a code span or block of README.md or docs/*.md must
  be an option of that command; a code span that is a flag (`--protect`) must be an option of
  some edgerun command or listed in FOREIGN_FLAGS. Failure messages name the option, the command
  and the page (with its line).
* README.md stays a tour of at most 250 lines.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgerun.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
EXAMPLE_TIMEOUT_S = 120

# The reference page(s) of each command: a key is a command ("predict") or a subcommand
# ("models import"; without its own key a subcommand uses its command's pages). Each option must
# appear in one of the pages; pages that do not exist (yet) are left out. A new command needs a key.
COMMAND_PAGES: dict[str, tuple[str, ...]] = {
    "predict": ("docs/models.md", "docs/detection.md"),
    "models": ("docs/models.md", "docs/detection.md"),
    "backends": ("docs/hardware.md",),
    "devices": ("docs/hardware.md",),
    "profile": ("docs/profiler.md",),
    "serve": ("docs/serving.md",),
    "run": ("docs/camera.md", "docs/detection.md"),
    "optimize": ("docs/optimize.md",),
    "config": ("docs/configuration.md",),
    "top": ("docs/serving.md", "docs/telemetry.md"),
}


def pages_of(path: tuple[str, ...]) -> tuple[str, ...]:
    """The existing reference pages of a command path (longest key of COMMAND_PAGES that fits)."""
    for size in range(len(path), 0, -1):
        key = " ".join(path[:size])
        if key in COMMAND_PAGES:
            return tuple(page for page in COMMAND_PAGES[key] if (ROOT / page).exists())
    return ()


FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(output:\s*varies|not run:.*?)\s*-->\s*$")
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
# `edgerun CMD [SUB]` at the start of a code line or span, after a prompt, a venv path or `-m`.
COMMAND = re.compile(r"(?:^|\$ |/bin/|-m |&& )edgerun\s+([a-z][\w-]*)((?:\s+[a-z][\w-]*)?)(.*)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int          # 1-based line of the opening fence
    language: str
    text: str
    marker: str        # "", "output: varies" or "not run: ..."

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        previous = lines[index - 1].strip() if index else ""
        marker = MARKER.match(previous)
        blocks.append(Block(page, index + 1, opening.group(1), "\n".join(lines[index + 1:end]) + "\n",
                            marker.group(1) if marker else ""))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]


def _first_command(block: Block) -> str:
    lines = [line for line in block.text.splitlines() if line.strip() and not line.startswith("#")]
    return lines[0].removeprefix("$ ") if lines else ""


PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.language == "python" and not b.marker.startswith("not run")]
SH_BLOCKS = [b for b in ALL_BLOCKS if b.language in ("sh", "bash")
             and _first_command(b).startswith("edgerun ") and not b.marker.startswith("not run")]


# ---------------------------------------------------------------- running examples

@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Links to the repository's top-level entries, plus a bin/edgerun that runs this checkout."""
    base = tmp_path_factory.mktemp("docs")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "edgerun"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edgerun "$@"\n')
    wrapper.chmod(0o755)
    return base


def _workdir(scratch: Path, name: str) -> Path:
    folder = scratch / name
    folder.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (folder / entry.name).symlink_to(entry)
    return folder


def _environment(scratch: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGERUN_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = f"{scratch / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """`edgerun serve`'s app with its defaults (mobilenet_v2, blazeface) on 127.0.0.1, a free port."""
    from edgerun.serving import ServeConfig, create_app
    from tests.serving_helpers import ServerThread

    with ServerThread(create_app(ServeConfig())) as server:
        server.wait_ready()
        yield server.url


def _block_id(block: Block) -> str:
    return block.where


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_block_id)
def test_python_example_runs(block: Block, scratch: Path, request: pytest.FixtureRequest) -> None:
    extra = {"EDGERUN_URL": request.getfixturevalue("server_url")} if "EDGERUN_URL" in block.text else {}
    folder = _workdir(scratch, f"py-{block.page.stem}-{block.line}")
    done = _run([sys.executable, "-c", block.text], folder, _environment(scratch, extra))
    assert done.returncode == 0, f"{block.where}: the python example failed:\n{done.stderr[-3000:]}"


def _commands(block: Block) -> list[tuple[str, list[str] | None]]:
    """(command, expected output lines or None when not compared) for each command of a sh block."""
    lines = block.text.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return [(block.text, None)]
    commands: list[tuple[str, list[str] | None]] = []
    for line in lines:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            expected = commands[-1][1]
            assert expected is not None
            expected.append(line)
    if block.marker == "output: varies":
        return [(command, None) for command, _ in commands]
    return commands


def _line_matches(expected: str, actual: str) -> bool:
    expected, actual = expected.rstrip(), actual.rstrip()
    if expected.endswith("...") and expected != "...":
        return actual.startswith(expected[:-3])
    return expected == actual


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Compare with `...` wildcards (see the module docstring)."""
    if not expected:
        return not actual
    if expected[0].strip() == "...":
        return any(output_matches(expected[1:], actual[skip:]) for skip in range(len(actual) + 1))
    return bool(actual) and _line_matches(expected[0], actual[0]) and output_matches(expected[1:], actual[1:])


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


@pytest.mark.parametrize("block", SH_BLOCKS, ids=_block_id)
def test_shell_example_prints_what_the_page_shows(block: Block, scratch: Path) -> None:
    folder = _workdir(scratch, f"sh-{block.page.stem}-{block.line}")
    for command, expected in _commands(block):
        done = _run(["bash", "-e", "-c", command], folder, _environment(scratch))
        wants_error = expected is not None and any(line.startswith("edgerun: error:") for line in expected)
        shown = done.stdout + (done.stderr if done.returncode else "")
        assert done.returncode == (1 if wants_error else 0), (
            f"{block.where}: `{command.strip()}` exited {done.returncode}:\n{shown[-3000:]}")
        if expected is not None:
            actual = _trim(shown.splitlines())
            assert output_matches(_trim(expected), actual), (
                f"{block.where}: `{command}` printed something else than the page shows.\n"
                f"--- page\n" + "\n".join(expected) + "\n--- actual\n" + "\n".join(actual))


def test_output_matching_follows_the_documented_rules() -> None:
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert output_matches(["a", "...", "b"], ["a", "b"])
    assert output_matches(["timings (ms): ..."], ["timings (ms): decode 1.0"])
    assert not output_matches(["a", "b"], ["a", "b", "c"])
    assert not output_matches(["timings (ms): ..."], ["timing: 1"])
    assert not output_matches(["a", "...", "d"], ["a", "b"])


# ---------------------------------------------------------------- help text against the pages

def command_options(parser: argparse.ArgumentParser,
                    path: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    """Every command path (("predict",), ("models", "import"), ...) -> its long options but --help."""
    found: dict[tuple[str, ...], set[str]] = {}
    options: set[str] = set()
    for action in parser._actions:  # argparse keeps no public list of actions
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(command_options(sub, (*path, name)))
        else:
            options.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
    if path:
        found[path] = options
    return found


OPTIONS = command_options(build_parser())


def _mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", sorted(OPTIONS), ids=" ".join)
def test_every_help_option_is_in_its_page(path: tuple[str, ...]) -> None:
    command = "edgerun " + " ".join(path)
    pages = pages_of(path)
    assert pages, (f"`{command}` has no reference page: add {path[0]!r} (or {' '.join(path)!r}) to "
                   "COMMAND_PAGES in tests/test_docs.py, naming an existing page")
    text = "".join((ROOT / page).read_text(encoding="utf-8") for page in pages)
    missing = sorted(o for o in OPTIONS[path] if not _mentions(text, o))
    assert not missing, (f"`{command}` options missing from {' and '.join(pages)} (add each to the "
                         f"synopsis or text of one of them): {', '.join(missing)}")


def code_snippets(page: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every code line inside fenced blocks and every inline code span."""
    in_block = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
        elif in_block:
            yield number, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def documented_invocations(page: Path) -> Iterator[tuple[int, tuple[str, ...], str]]:
    """(line, command path, the text after it) for each `edgerun ...` in code; synopsis lines that
    continue a command (indented, starting with `[` or `-`) belong to it."""
    current: tuple[str, ...] | None = None
    for number, text in code_snippets(page):
        match = COMMAND.search(text)
        if match:
            name, sub, rest = match.group(1), match.group(2).strip(), match.group(3)
            current = (name, sub) if (name, sub) in OPTIONS else (name,)
            if current == (name,) and sub:
                rest = f"{sub} {rest}"
            yield number, current, re.split(r" \| | && |;| # ", rest)[0]
        elif current and re.match(r"^\s+[\[-]", text):
            yield number, current, text
        else:
            current = None


def test_every_documented_option_exists() -> None:
    problems = []
    for page in PAGES:
        where = page.relative_to(ROOT)
        for line, path, rest in documented_invocations(page):
            command = "edgerun " + " ".join(path)
            if path not in OPTIONS:
                problems.append(f"{where}:{line}: `{command}` is not a command of edgerun")
                continue
            for flag in FLAG.findall(rest):
                if flag not in OPTIONS[path] and flag != "--help":
                    problems.append(f"{where}:{line}: `{command}` has no option {flag}")
    assert not problems, "documented options that `edgerun --help` does not have:\n" + "\n".join(problems)


# Flags of other programs that the pages write as `--flag` code spans -> the program.
FOREIGN_FLAGS = {
    "--system-site-packages": "python -m venv",
    "--kserve-mode": "benchmarks/serving.py",
    "--input-data": "perf_analyzer",
    "--layerPrecisions": "trtexec",
}


def test_every_flag_span_is_an_option_of_some_command() -> None:
    """A code span that starts with a flag (`--protect`) names an edgerun option (or a FOREIGN_FLAGS one)."""
    known = set().union(*OPTIONS.values()) | {"--help"} | set(FOREIGN_FLAGS)
    problems = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for span in re.findall(r"`(--[A-Za-z0-9][\w-]*)", line):
                if span not in known:
                    problems.append(f"{page.relative_to(ROOT)}:{number}: {span} is no option of any "
                                    "edgerun command (another program's? add it to FOREIGN_FLAGS in "
                                    "tests/test_docs.py)")
    assert not problems, "\n".join(problems)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#:\s]*\.md)?(?:#([^)\s]*))?\)", text):
            linked = (page.parent / target) if target else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target} (no such page)")
            elif anchor and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_stays_a_tour() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; keep it a tour (<= 250), reference text goes to docs/"


SETUP_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -e '.[onnx,litert,vision]' && "
                 ".venv/bin/edgerun predict samples/chelsea.png")
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q"


def test_readme_keeps_the_two_setup_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```sh\n{SETUP_COMMAND}\n```" in readme and f"```sh\n{TEST_COMMAND}\n```" in readme
    assert "Egyptian cat 0.7166" in readme
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith(TEST_COMMAND)
