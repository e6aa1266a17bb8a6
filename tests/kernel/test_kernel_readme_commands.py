"""Every `interlock ...` command the README shows is one the CLI accepts, written the way the README writes it.

A newcomer copies these lines: an option the CLI wants elsewhere ("the option must precede the subcommand") or a
renamed flag fails here before anyone meets it. Placeholders (`<id>`, `N`, `path/to/...`) get sample values and
optional parts (`[--x Y]`) are tried both left out and filled in; `a|b|c` alternatives are each tried.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest

from interlock.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"<id>": "ap-123", "N": "2", "JSON": '{"order_id": "ORD-1001"}', "TEXT": "ok",
                "path/to/langgraph.json": "langgraph.json"}
# Names of commands in running text (their full usage is in graphs/retrieval/README.md and --help), not lines
# to paste.
MENTIONS = {"interlock ingest", "interlock search", "interlock serve --workers"}


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    inline = re.findall(r"`(interlock [^`]+)`", text)
    blocks = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
              for line in block.splitlines() if line.strip().startswith("interlock ")]
    commands = [c for c in dict.fromkeys(inline + blocks) if len(c.split()) > 1]
    return [c for c in commands if c not in MENTIONS]


def _variants(command: str) -> list[list[str]]:
    """The concrete argument lists a README command stands for."""
    optional = re.findall(r"\[([^\]]+)\]", command)
    bare = re.sub(r"\s*\[[^\]]+\]", "", command)
    out = []
    for keep in itertools.product([False, True], repeat=len(optional)):
        line = bare + "".join(" " + opt for opt, k in zip(optional, keep, strict=True) if k)
        words = shlex.split(line)[1:]
        choices = [w.split("|") if "|" in w and not w.startswith("-") else [w] for w in words]
        for combo in itertools.product(*choices):
            out.append([PLACEHOLDERS.get(w, w) for w in combo])
    return out


COMMANDS = _readme_commands()


def test_the_readme_shows_the_commands_a_newcomer_needs() -> None:
    shown = {c.split()[1] for c in COMMANDS}
    assert {"approvals", "serve", "token", "guard", "eval", "config"} <= shown, shown


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command: str) -> None:
    parser = build_parser()
    for argv in _variants(command):
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"the CLI refuses {' '.join(argv)!r} (README: {command!r}), exit {exc.code}")
        assert callable(getattr(args, "func", None)), argv
