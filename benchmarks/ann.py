"""``recops bench ann``: approximate vs exact top-10 over large item tables, per query.

For each catalogue size: a clustered synthetic item table (``dim`` floats per item
around 1,000 topics, the shape trained item tables take; pure Gaussian noise would be
the worst case for any index), queries drawn the same way, then

* ``exact``  - one query's ``[1, dim] x [dim, N]`` product and top-10 in torch on one
  thread (what the service does with ``serve.cpu_threads: 1``);
* ``ann``    - :class:`components.models.ann.AnnIndex` at each ``nprobe``, one thread:
  latency per query, recall@10 against the exact top 10, and the index build time.

With ``--bundle`` (a saved model bundle) and ``--data`` (its event file) the table is the
trained model's own item table and the queries are its encodings of real user histories
(each user's sequence without its last item); a size above the table's own is reached
by replicating it with noise (each copy of a row perturbed by 10 % of the table's spread
per dimension), which the ``table`` column says.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class TrainedTable:
    """A trained model's item table and real history encodings to query it with."""

    table: np.ndarray  # [n_items, D] float32, row i is item i + 1
    queries: np.ndarray  # [n_queries, D] float32
    name: str  # model name and catalogue size, for the report


def trained_table(
    bundle_dir: Path, data: Path, fmt: str, n_queries: int, seed: int = 0
) -> TrainedTable:
    """The bundle's item table and its encodings of ``n_queries`` random users' histories
    from ``data`` (each without its last item, at most ``max_len`` long)."""
    from components.data.loaders import load_events
    from components.data.sequences import build_sequences
    from components.errors import RecopsError
    from components.models.ann import item_table, supports_ann
    from components.models.bundle import ModelBundle

    bundle = ModelBundle.load(bundle_dir, "cpu")
    if not supports_ann(bundle.model):
        raise RecopsError(f"{bundle.model_name} does not score by a dot product: no ANN index")
    sequences = build_sequences(load_events(data, fmt), bundle.vocab).truncate_tail(1)
    users = np.flatnonzero(sequences.lengths > 0)
    chosen = np.random.default_rng(seed).choice(users, min(n_queries, len(users)), replace=False)
    histories = sequences.select(np.sort(chosen)).padded(bundle.max_len)
    with torch.inference_mode():
        queries = bundle.model.encode(histories).float().numpy()
    table = item_table(bundle.model)
    return TrainedTable(table, np.ascontiguousarray(queries), f"{bundle.model_name} {len(table)}")


def replicated(table: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``table`` grown to ``n`` rows: its own rows first, then noisy copies of random rows
    (noise 0.1 x the per-dimension standard deviation)."""
    if n <= len(table):
        return table[:n]
    rng = np.random.default_rng(seed)
    extra = table[rng.integers(0, len(table), n - len(table))]
    extra = extra + 0.1 * table.std(axis=0) * rng.normal(size=extra.shape).astype(np.float32)
    return np.concatenate([table, extra.astype(np.float32)])


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


def _tables(
    sizes: list[int], dim: int, n_queries: int, trained: TrainedTable | None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(label, table, queries)`` per size: clustered synthetic, or the trained table
    (replicated with noise above its own size)."""
    if trained is None:
        synthetic = [(n, clustered_table(n, dim, seed=n)) for n in sizes]
        return [("clustered", t, clustered_table(n_queries, dim, seed=n + 1)) for n, t in synthetic]
    out = []
    for n in sizes or [len(trained.table)]:
        grown = n > len(trained.table)
        label = f"{trained.name}" + (" replicated+noise" if grown else "")
        out.append((label, replicated(trained.table, n, seed=n), trained.queries))
    return out


def run_ann_benchmark(
    sizes: list[int],
    dim: int = 64,
    n_queries: int = 200,
    nprobes: list[int] | None = None,
    trained: TrainedTable | None = None,
) -> dict[str, Any]:
    """Rows per size: exact, then ANN at each ``nprobe`` (see module doc)."""
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for label, table, queries in _tables(sizes, dim, n_queries, trained):
        n = len(table)
        exact, exact_ms = _exact(torch.from_numpy(table), queries)
        rows.append({"items": n, "table": label, "method": "exact"})
        rows[-1].update({"ms_per_query": round(exact_ms, 3), "recall_at_10": 1.0, "build_s": 0.0})
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
                    "table": label,
                    "method": f"ann nprobe={nprobe}",
                    "ms_per_query": round(ms, 3),
                    "recall_at_10": round(recall(found, exact), 3),
                    "build_s": round(build_s, 1),
                }
            )
    return {
        "benchmark": "ann",
        "dim": dim if trained is None else int(trained.table.shape[1]),
        "queries": n_queries if trained is None else len(trained.queries),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
        "rows": rows,
    }


def render_table(result: dict[str, Any]) -> str:
    machine = result["machine"]
    head = (
        f"{'items':>9} {'table':<28} {'method':<16} {'ms/query':>9} {'recall@10':>9} {'build s':>8}"
    )
    lines = [
        f"top-{K} per query, {result['dim']}-d item table, {result['queries']} "
        f"queries, one thread; {machine['cpus']} CPUs (load {machine['load_avg_1m']})",
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['items']:>9} {r.get('table', 'clustered'):<28} {r['method']:<16} "
            f"{r['ms_per_query']:>9} "
            f"{r['recall_at_10']:>9} {r['build_s']:>8}"
        )
    return "\n".join(lines)
