"""``recops bench pipeline``'s CPU accounting: a stage's CPU seconds are read from a
sampled trace of this process's (and its children's) CPU time."""

from __future__ import annotations

import time

from benchmarks.pipeline import CpuTrace


def test_cpu_trace_gives_a_busy_interval_its_cpu_seconds() -> None:
    trace = CpuTrace(interval_s=0.02)
    trace.start()
    begin, cpu_begin = time.time(), time.process_time()
    while time.process_time() - cpu_begin < 0.3:  # burn 0.3 s of CPU
        sum(range(10_000))
    end = time.time()
    trace.stop()
    busy = trace.at(end) - trace.at(begin)
    assert 0.2 <= busy <= trace.samples[-1][1] - trace.samples[0][1] + 1e-9
    assert trace.at(begin - 3600) == trace.samples[0][1]  # before the trace: its first value


def test_the_library_floor_lists_site_packages_only_and_a_fresh_interpreter_pays_it() -> None:
    """The floor is read from what this process imported: a site-packages package is in
    it, the standard library and recops's own packages are not; the probe imports them
    in a new interpreter, reports its CPU seconds and names what it could not import."""
    import json  # noqa: F401  the standard library: never part of the floor

    import numpy  # noqa: F401

    import components  # noqa: F401
    from benchmarks.pipeline import import_cpu_seconds, third_party_packages

    packages = third_party_packages()
    assert "numpy" in packages
    assert "json" not in packages and "components" not in packages
    bare, _ = import_cpu_seconds([])
    with_numpy, failed = import_cpu_seconds(["numpy", "no_such_package_recops"])
    assert failed == ["no_such_package_recops"]
    assert 0 < bare < with_numpy  # importing numpy costs CPU on top of the bare start
