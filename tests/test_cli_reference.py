"""docs/cli.md lists every subcommand and option of `scan-keras`.

The page is written by hand; this test reads the parser itself
(`scan_keras.cli._parser()`) and checks the page against it, so that the
two cannot drift apart: every subcommand has a section, every option and
positional argument a row in that section's table, with the parser's
default and choices, and the page lists no option the parser lacks.
"""

import argparse
import os
import re

import pytest

from scan_keras.cli import _parser

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "cli.md")


def _commands(parser, path=()):
    """(path of the subcommand, its parser) for every subcommand, nested
    ones included (`index build`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def _arguments(parser):
    """The arguments of one parser: neither --help nor its subcommands."""
    return [
        a for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def _sections():
    """{("index", "build"): the text under "## scan-keras index build"}."""
    with open(PAGE, encoding="utf-8") as f:
        text = f.read()
    headings = list(re.finditer(r"^#{2,3} scan-keras ([\w -]+?)\s*$", text, re.MULTILINE))
    sections = {}
    for heading, following in zip(headings, headings[1:] + [None]):
        end = following.start() if following else len(text)
        sections[tuple(heading.group(1).split())] = text[heading.end():end]
    return sections


def _rows(section):
    """{first cell: whole row} of the section's option table."""
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def _label(action):
    """How the page names an argument: its option strings, or for a
    positional argument its metavar or upper-cased name."""
    if action.option_strings:
        return action.option_strings
    return [action.metavar or action.dest.upper()]


COMMANDS = sorted(_commands(_parser()))


def test_every_subcommand_has_a_section():
    sections = _sections()
    for path, _ in COMMANDS:
        assert path in sections, f"docs/cli.md has no section '## scan-keras {' '.join(path)}'"
    assert set(sections) == {path for path, _ in COMMANDS}, "docs/cli.md documents a command the parser lacks"


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_is_listed_with_its_default_and_choices(path, parser):
    rows = _rows(_sections()[path])
    documented = set()
    for action in _arguments(parser):
        names = _label(action)
        found = [key for key in rows if key.split()[0] in names or key.split()[0] == names[0]]
        where = f"scan-keras {' '.join(path)} {names[0]}"
        assert found, f"docs/cli.md does not list {where}"
        row = rows[found[0]]
        documented.add(found[0])
        if action.required or (not action.option_strings and action.nargs in (None, "+")):
            assert "| required |" in row, f"{where} is required; the page does not say so"
        default = action.default
        if default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert str(default) in row.split("|")[2], f"{where}: the default {default!r} is not on the page"
        for choice in action.choices or ():
            assert str(choice) in row, f"{where}: the choice {choice!r} is not on the page"
    stale = set(rows) - documented
    assert not stale, f"docs/cli.md lists options that scan-keras {' '.join(path)} lacks: {sorted(stale)}"
