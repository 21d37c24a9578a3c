"""``python -m flows.cli``: the ``recops`` command without its console script.

Tests start the CLI this way rather than with ``python -c``: pyspark (installed with the
spark extra) treats a ``__main__`` without a file or spec as its own doctest run and exits
0 as soon as Great Expectations imports it, so a ``-c`` process ends silently."""

from flows.cli.app import main

main()
