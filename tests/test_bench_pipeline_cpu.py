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
