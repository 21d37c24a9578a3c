"""``recops bench ann``: approximate vs exact top-10 over large item tables, per query.

For each catalogue size: a clustered synthetic item table (``dim`` floats per item
around 1,000 topics, the shape trained item tables take; pure Gaussian noise would be
the worst case for any index), queries drawn the same way, then

* ``exact``  - one query's ``[1, dim] x [dim, N]`` product and top-10 in torch on one
  thread (what the service does with ``serve.cpu_threads: 1``);
* ``ann``    - :class:`components.models.ann.AnnIndex` at each ``nprobe``, one thread:
  latency per query, recall@10 against the exact top 10, and the index build time.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np
import torch

from components.models.ann import AnnIndex, build_index

TOPICS = 1000
K = 10


def clustered_table(n: int, dim: int, seed: int) -> np.ndarray:
    """``[n, dim]`` float32 rows around ``TOPICS`` topic centres (unit noise 0.5)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(TOPICS, dim))
    rows = centres[rng.integers(0, TOPICS, n)] + 0.5 * rng.normal(size=(n, dim))
    return rows.astype(np.float32)


def _exact(table: torch.Tensor, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-K per query (one at a time) and the median ms per query."""
    found, times = [], []
    with torch.inference_mode():
        for q in torch.from_numpy(queries):
            start = time.perf_counter()
            found.append((table @ q).topk(K).indices.numpy())
            times.append(time.perf_counter() - start)
    return np.stack(found) + 1, float(np.median(times) * 1000)


def _approximate(ann: AnnIndex, queries: np.ndarray) -> tuple[np.ndarray, float]:
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(ann.candidates(q[None, :], K)[0])
        times.append(time.perf_counter() - start)
    return np.stack(found), float(np.median(times) * 1000)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top K found, per query."""
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def run_ann_benchmark(
    sizes: list[int], dim: int = 64, n_queries: int = 200, nprobes: list[int] | None = None
) -> dict[str, Any]:
    """Rows per size: exact, then ANN at each ``nprobe`` (see module doc)."""
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        table = clustered_table(n, dim, seed=n)
        queries = clustered_table(n_queries, dim, seed=n + 1)
        exact, exact_ms = _exact(torch.from_numpy(table), queries)
        rows.append({"items": n, "method": "exact", "ms_per_query": round(exact_ms, 3)})
        rows[-1].update({"recall_at_10": 1.0, "build_s": 0.0})
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # the build runs once, at bento build
        start = time.perf_counter()
        index = build_index(table)
        build_s = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        for nprobe in nprobes or [8, 32]:
            found, ms = _approximate(AnnIndex(index, nprobe), queries)
            rows.append(
                {
                    "items": n,
                    "method": f"ann nprobe={nprobe}",
                    "ms_per_query": round(ms, 3),
                    "recall_at_10": round(recall(found, exact), 3),
                    "build_s": round(build_s, 1),
                }
            )
    return {
        "benchmark": "ann",
        "dim": dim,
        "queries": n_queries,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
        "rows": rows,
    }


def render_table(result: dict[str, Any]) -> str:
    machine = result["machine"]
    head = f"{'items':>9} {'method':<16} {'ms/query':>9} {'recall@10':>9} {'build s':>8}"
    lines = [
        f"top-{K} per query, {result['dim']}-d clustered item table, {result['queries']} "
        f"queries, one thread; {machine['cpus']} CPUs (load {machine['load_avg_1m']})",
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['items']:>9} {r['method']:<16} {r['ms_per_query']:>9} "
            f"{r['recall_at_10']:>9} {r['build_s']:>8}"
        )
    return "\n".join(lines)
