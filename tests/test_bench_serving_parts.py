"""`recops bench serving` pieces that need no server: wrk output parsing, ratios."""

from __future__ import annotations

import math
import os

from benchmarks.serving import parse_wrk, summarise

WRK_OUTPUT = """Running 4s test @ http://127.0.0.1:40289/recommend
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    28.10ms   40.00ms 357.77ms   90.00%
  Latency Distribution
     50%  636.00us
     75%   12.00ms
     90%   20.50ms
     99%    1.18s
  1128 requests in 4.00s, 500.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    281.87
Transfer/sec:    125.00KB
"""


def test_wrk_output_is_parsed_with_units_and_all_errors() -> None:
    row = parse_wrk(WRK_OUTPUT)
    assert row["requests"] == 1128 and row["rps"] == 281.9
    assert row["p50_ms"] == 0.64 and row["p90_ms"] == 20.5 and row["p99_ms"] == 1180.0
    assert row["errors"] == 7  # 4 non-2xx + 3 socket errors
    assert (row["non_2xx"], row["timeouts"]) == (4, 1)
    assert math.isnan(parse_wrk("garbage")["p50_ms"])


def test_summary_compares_bento_with_echo_at_each_level() -> None:
    rows = [
        {"target": "bento", "concurrency": 1, "rps": 400.0, "p99_ms": 5.0, "errors": 0},
        {"target": "echo", "concurrency": 1, "rps": 500.0, "p99_ms": 4.0, "errors": 0},
        {
            "target": "backend",
            "concurrency": 1,
            "rps": 450.0,
            "p99_ms": 4.0,
            "errors": 0,
            "stall_ms": 120.0,
        },
        {"target": "bento", "concurrency": 8, "rps": 300.0, "p99_ms": 30.0, "errors": 0},
        {"target": "echo", "concurrency": 8, "rps": 500.0, "p99_ms": 10.0, "errors": 0},
        {"target": "in-process", "concurrency": 8, "rps": 9000.0, "p99_ms": 1.0, "errors": 0},
    ]
    one, eight = summarise(rows)
    assert (one["rps_ratio"], one["p99_ratio"], one["meets_target"]) == (0.8, 1.25, True)
    assert (eight["rps_ratio"], eight["p99_ratio"], eight["meets_target"]) == (0.6, 3.0, False)


def test_run_queue_wait_counts_the_time_a_process_tree_waited_for_a_cpu() -> None:
    """Two busy processes pinned to one CPU take turns: each waits for the CPU about as
    long as the other runs, and ``run_queue_seconds`` of their parent counts it."""
    import subprocess
    import sys
    import time

    from benchmarks.serving import run_queue_seconds

    cpu = sorted(os.sched_getaffinity(0))[0]
    burn = (
        f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\n"
        "end = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
        "time.sleep(30)\n"
    )
    spawn = f"import subprocess, sys\nfor _ in range(2): subprocess.Popen([sys.executable, '-c', {burn!r}])\n"
    parent = subprocess.Popen([sys.executable, "-c", spawn + "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while run_queue_seconds([parent.pid]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_queue_seconds([parent.pid]) >= 0.3
    finally:
        import psutil

        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    assert run_queue_seconds([parent.pid]) == 0.0  # gone: nothing to count, no error


def test_server_cpu_counts_a_process_and_its_children() -> None:
    """``cpu_seconds`` sums a process tree (a bento is an arbiter plus workers), so the
    per-request CPU column covers every process that served the request."""
    import subprocess
    import sys
    import time

    from benchmarks.serving import cpu_seconds

    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}]); import time; time.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds([parent.pid]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # while the child runs it is a descendant; once reaped, its time is in the
        # parent's children's times: either way it is counted
        assert cpu_seconds([parent.pid]) >= 0.25
    finally:
        parent.kill()
        parent.wait()
    assert cpu_seconds([parent.pid]) == 0.0  # gone: nothing to count, no error
