"""The installed environment itself: libraries that change how a process behaves."""

from __future__ import annotations

import subprocess
import sys


def test_a_python_c_process_survives_importing_great_expectations() -> None:
    """pyspark without its [connect] extras calls sys.exit(0) when GX imports it in a
    `python -c` process (it takes one for a doctest run): pytest-xdist workers and any
    one-liner importing recops would end silently with exit status 0."""
    done = subprocess.run(
        [sys.executable, "-c", "import great_expectations; print('still here')"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "still here" in done.stdout, done.stderr[-2000:]
