"""The installed ``apogeenet`` command, run as a user runs it (a real process)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXE = shutil.which("apogeenet") or str(Path(sys.executable).parent / "apogeenet")


def run(*args, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)
