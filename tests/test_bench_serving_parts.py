"""`recops bench serving` pieces that need no server: wrk output parsing, ratios."""

from __future__ import annotations

import math

from benchmarks.serving import StallMeter, parse_wrk, summarise

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
    assert (one["stall_ms"], eight["stall_ms"]) == (120.0, 0.0)  # the level's worst target


def test_the_stall_meter_sees_a_thread_kept_from_running() -> None:
    """A busy thread that keeps the GIL (switch interval 1 s) for 0.2 s keeps the meter's
    1 ms sleeper waiting as long: a stall of a ready thread, which it reports."""
    import sys
    import time

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        with StallMeter() as meter:
            end = time.perf_counter() + 0.2
            while time.perf_counter() < end:
                pass
    finally:
        sys.setswitchinterval(interval)
    assert 150 <= meter.max_ms < 5_000


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
