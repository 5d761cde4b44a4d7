"""`apogeenet --help` reads whole at any terminal width: no command line cut with "...", and a
wide terminal is used (click's default stops at 80 columns)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from commands import EXE

from apogeenet.cli import SHORT_HELP


def _help(width: int, *args: str) -> str:
    return subprocess.run([EXE, *args, "--help"], capture_output=True, text=True, check=True,
                          env={**os.environ, "COLUMNS": str(width)}).stdout


@pytest.mark.parametrize("width", [50, 80, 200])
def test_every_command_reads_whole(width):
    text = re.sub(r"\s+", " ", _help(width).split("Commands:")[1])
    assert "..." not in text
    for name, line in SHORT_HELP.items():
        assert f"{name} {line}" in text, name


def test_a_wide_terminal_is_used():
    lines = _help(200, "serve-model").splitlines()
    assert max(map(len, lines)) > 100  # an option's help on one line, not folded at 80
