"""Closed-loop HTTP load generator, run as its own process by ``recops bench serving``.

``python -m benchmarks.loadgen --url URL --concurrency C --duration S --body JSON``
keeps ``C`` requests in flight for ``S`` seconds (after a 1 s warm-up) over keep-alive
connections and prints one JSON line: requests, errors, requests/s, p50/p95/p99 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    until: float,
    warm_until: float,
    out: list[float],
    errors: list[int],
) -> None:
    while (start := time.perf_counter()) < until:
        try:
            resp = await client.post(url, content=body, headers=headers)
            ok = resp.status_code == 200
        except httpx.HTTPError:
            ok = False
        end = time.perf_counter()
        if start >= warm_until:
            if ok:
                out.append(end - start)
            else:
                errors.append(1)


async def run(
    url: str, concurrency: int, duration: float, body: bytes, headers: dict[str, str]
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[int] = []
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        now = time.perf_counter()
        warm_until, until = now + 1.0, now + 1.0 + duration
        await asyncio.gather(
            *(
                _worker(client, url, body, headers, until, warm_until, latencies, errors)
                for _ in range(concurrency)
            )
        )
    ms = np.asarray(latencies) * 1000.0
    pct = np.percentile(ms, [50, 95, 99]) if len(ms) else [float("nan")] * 3
    return {
        "concurrency": concurrency,
        "requests": len(ms),
        "errors": len(errors),
        "rps": round(len(ms) / duration, 1),
        "p50_ms": round(float(pct[0]), 2),
        "p95_ms": round(float(pct[1]), 2),
        "p99_ms": round(float(pct[2]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    args = parser.parse_args()
    headers = {"content-type": "application/json"}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    result = asyncio.run(
        run(args.url, args.concurrency, args.duration, args.body.encode(), headers)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
