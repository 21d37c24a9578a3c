"""``recops bench accuracy``: train models on one dataset, report accuracy and speed.

Each model uses ``configs/models/<name>.yaml`` over ``configs/default.yaml`` (plus
``--set`` overrides), the dataset's leave-one-out split and full ranking. Reported per
model: test HR@10 / NDCG@10 / MRR, epochs, training seconds per epoch (validation
excluded), training samples/s, peak RSS during that model's run (sampled every 0.2 s),
and wall seconds from the start of fitting until validation NDCG@10 first reached each
of two targets (default 0.035 and 0.05; validation time and the model's setup before
the first step included; ``None`` if never reached), with the process CPU seconds (all threads) spent by then beside them: on a
shared machine the wall figure mostly measures the others' load, the CPU figure much
less (on an otherwise idle machine wall ~= CPU / threads at best).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

MODEL_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "models"


def anonymous_rss_mb() -> float:
    """This process's anonymous resident memory (``RssAnon``, Linux; 0 elsewhere): RSS
    without file-backed pages such as a memory-mapped cache being read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRSS:
    """Context manager sampling this process's resident memory; ``.peak_mb`` afterwards
    (and ``.peak_anon_mb``, the anonymous part, see :func:`anonymous_rss_mb`)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.peak_anon_mb = 0.0
        self._stop = threading.Event()
        self._process = psutil.Process(os.getpid())

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
            self.peak_anon_mb = max(self.peak_anon_mb, anonymous_rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)


def seconds_to_target(
    history: list[dict[str, float]],
    target: float,
    key: str = "ndcg@10",
    clock: str = "elapsed_s",
) -> float | None:
    """``clock`` (wall ``elapsed_s`` or ``cpu_s``) at the first validation whose ``key``
    reached ``target``."""
    for entry in history:
        if entry.get(key, 0.0) >= target:
            return entry.get(clock)
    return None


def count_from_call(history: list[dict[str, float]], started: float, cpu_started: float) -> None:
    """Re-base each validation's ``elapsed_s`` / ``cpu_s`` (counted by the trainer from the
    first training step) on the call to train (``started``: ``perf_counter``,
    ``cpu_started``: ``process_time``), so the time to a target includes the model's
    data-dependent setup (building the bundle, e.g. the item-transition warm start, and
    tensorising the training data). Entries without the absolute clocks are left alone."""
    for entry in history:
        if "clock_s" in entry and "process_cpu_s" in entry:
            entry["elapsed_s"] = entry.pop("clock_s") - started
            entry["cpu_s"] = entry.pop("process_cpu_s") - cpu_started


def _model_config(name: str, data: Path, fmt: str, max_epochs: int | None, overrides: list[str]):
    from components.config import load_config

    path = MODEL_CONFIGS / f"{name}.yaml"
    extra = [
        f"model.name={name}",
        f"data.path={data}",
        f"data.format={fmt}",
        "train.progress_bar=false",
    ]
    if max_epochs:
        extra.append(f"train.max_epochs={max_epochs}")
    return load_config([path] if path.exists() else [], extra + overrides)


def benchmark_one(
    name: str,
    data: Path,
    fmt: str,
    max_epochs: int | None,
    target_ndcg: float,
    overrides: list[str],
    high_target_ndcg: float = 0.05,
) -> dict[str, Any]:
    """Train and evaluate one model; the row of the table."""
    from components.lifecycle.prepare import prepare_dataset
    from components.lifecycle.train import train

    cfg = _model_config(name, data, fmt, max_epochs, overrides)
    prepared = prepare_dataset(cfg.data)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp, PeakRSS() as rss:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = train(prepared, cfg, Path(tmp) / "run").result
        wall = time.perf_counter() - started
    count_from_call(result.history, started, cpu_started)
    other = _other_protocol(result.bundle, prepared, cfg)
    epochs = max(result.epochs, 0)
    return {
        "model": name,
        "hr@10": result.metrics_test.get("hr@10"),
        "ndcg@10": result.metrics_test.get("ndcg@10"),
        "mrr": result.metrics_test.get("mrr"),
        "valid_ndcg@10": result.metrics_valid.get("ndcg@10"),
        "epochs": epochs,
        "train_s_per_epoch": result.train_seconds / epochs if epochs else None,
        "train_samples_per_s": result.samples_per_second if epochs else None,
        "train_targets_per_s": result.targets_per_second if epochs else None,
        "peak_rss_mb": rss.peak_mb,
        "seconds_to_target": seconds_to_target(result.history, target_ndcg),
        "seconds_to_high_target": seconds_to_target(result.history, high_target_ndcg),
        "cpu_seconds_to_target": seconds_to_target(result.history, target_ndcg, clock="cpu_s"),
        "cpu_seconds_to_high_target": seconds_to_target(
            result.history, high_target_ndcg, clock="cpu_s"
        ),
        "high_target_ndcg": high_target_ndcg,
        "wall_s": wall,
        "exclude_seen": cfg.eval.exclude_seen,
        # the learned logit offset for history items (None: the model has none)
        "seen_bias": result.bundle.model.learned_seen_offset(),
        # the same model under the other history-exclusion protocol (the published Beauty
        # figures come from reference code that removes history items before ranking)
        "other_protocol": other,
        "n_users": result.metrics_test.get("n_users"),
        "n_items": prepared.split.n_items,
        "params": result.bundle.params,
        "train": cfg.train.model_dump(mode="json"),
        "history": result.history,
        "torch_threads": __import__("torch").get_num_threads(),
    }


def _other_protocol(bundle: Any, prepared: Any, cfg: Any) -> dict[str, Any]:
    """Test HR@10 / NDCG@10 / MRR of ``bundle`` with history exclusion flipped."""
    from components.evaluation.metrics import evaluate

    flipped = not cfg.eval.exclude_seen
    result = evaluate(
        bundle, prepared.split.test, ks=[10], exclude_seen=flipped, batch_size=cfg.eval.batch_size
    )
    return {
        "exclude_seen": flipped,
        **{k: result.summary.get(k) for k in ("hr@10", "ndcg@10", "mrr")},
    }


def run_accuracy_benchmark(
    data: Path,
    fmt: str,
    models: list[str],
    *,
    max_epochs: int | None = None,
    target_ndcg: float = 0.035,
    high_target_ndcg: float = 0.05,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per model, in the order given."""
    rows = []
    for name in models:
        row = benchmark_one(
            name, Path(data), fmt, max_epochs, target_ndcg, overrides or [], high_target_ndcg
        )
        if progress:
            progress(
                f"{name}: test NDCG@10 {row['ndcg@10']:.4f} after {row['epochs']} epochs ({row['wall_s']:.0f}s)"
            )
        rows.append(row)
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cpu_pair(row: dict[str, Any]) -> str:
    """``"a / b"``: CPU seconds to the two targets."""
    low, high = row.get("cpu_seconds_to_target"), row.get("cpu_seconds_to_high_target")
    return f"{_fmt(low, '.0f')} / {_fmt(high, '.0f')}"


def format_table(rows: list[dict[str, Any]], target_ndcg: float) -> str:
    """The human-readable table (same figures as the JSON)."""
    high = rows[0].get("high_target_ndcg", 0.05) if rows else 0.05
    header = (
        f"{'model':<10}{'HR@10':>8}{'NDCG@10':>9}{'MRR':>8}{'epochs':>7}{'s/epoch':>9}"
        f"{'samples/s':>11}{'peak RSS MB':>12}{f's to NDCG>={target_ndcg:g}':>18}"
        f"{f's to NDCG>={high:g}':>17}{'(CPU s)':>17}"
        f"{'NDCG@10 flip':>14}{'seen offset':>13}"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['model']:<10}{_fmt(r['hr@10'], '.4f'):>8}{_fmt(r['ndcg@10'], '.4f'):>9}{_fmt(r['mrr'], '.4f'):>8}"
            f"{r['epochs']:>7}{_fmt(r['train_s_per_epoch'], '.1f'):>9}{_fmt(r['train_samples_per_s'], ',.0f'):>11}"
            f"{r['peak_rss_mb']:>12.0f}{_fmt(r['seconds_to_target'], '.0f'):>18}"
            f"{_fmt(r.get('seconds_to_high_target'), '.0f'):>17}{_cpu_pair(r):>17}"
            f"{_fmt(r['other_protocol']['ndcg@10'], '.4f'):>14}{_fmt(r.get('seen_bias'), '.2f'):>13}"
        )
    protocol = "excluded" if rows and rows[0]["exclude_seen"] else "not excluded"
    flipped = "excluded" if protocol == "not excluded" else "not excluded"
    lines.append(
        f"full ranking over all items; history items {protocol}; test split, leave-one-out"
    )
    lines.append(f"'NDCG@10 flip': the same model's test NDCG@10 with history items {flipped}")
    lines.append(
        "'seen offset': the logit the model learned to add to items already in the history"
    )
    lines.append(
        "'(CPU s)': this process's CPU seconds (all threads) by the two targets' first hit"
    )
    return "\n".join(lines)


#: figures a seed summary reports, each as mean ± sd over the runs of one configuration
#: ("kept" / "excluded": test figures with history items ranked / removed)
SEED_FIGURES = (
    "valid_ndcg@10",
    "hr@10 kept",
    "hr@10 excluded",
    "ndcg@10 kept",
    "ndcg@10 excluded",
    "mrr kept",
    "mrr excluded",
    "epochs",
    "cpu_seconds_to_target",
    "cpu_seconds_to_high_target",
)
#: settings that may differ between the seeds of one configuration
_PER_RUN_SETTINGS = frozenset({"seed", "progress_bar"})


def configuration(row: dict[str, Any], payload: dict[str, Any]) -> str:
    """A row's configuration without its seed, as a canonical string: the runs a seed
    summary averages must agree on it (data, targets, model, params, training, protocol)."""
    train = {k: v for k, v in row.get("train", {}).items() if k not in _PER_RUN_SETTINGS}
    return json.dumps(
        {
            "data": payload.get("data"),
            "targets": [payload.get("target_ndcg"), row.get("high_target_ndcg")],
            "model": row["model"],
            "params": row.get("params"),
            "train": train,
            "exclude_seen": row.get("exclude_seen"),
        },
        sort_keys=True,
    )


def protocol_figures(row: dict[str, Any]) -> dict[str, float | None]:
    """One run's figures under :data:`SEED_FIGURES` names (test figures per protocol)."""
    other = row.get("other_protocol") or {}
    own, flipped = ("excluded", "kept") if row.get("exclude_seen") else ("kept", "excluded")
    figures: dict[str, float | None] = {
        "valid_ndcg@10": row.get("valid_ndcg@10"),
        "epochs": row.get("epochs"),
        "cpu_seconds_to_target": row.get("cpu_seconds_to_target"),
        "cpu_seconds_to_high_target": row.get("cpu_seconds_to_high_target"),
    }
    for metric in ("hr@10", "ndcg@10", "mrr"):
        figures[f"{metric} {own}"] = row.get(metric)
        figures[f"{metric} {flipped}"] = other.get(metric)
    return figures


def mean_sd(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample sd of the values present; ``n`` counts them (a run that never
    reached a target has no time, and is counted out rather than as zero)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    sd = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "sd": sd, "n": len(present)}


def read_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """The payloads of ``recops bench accuracy --json`` files; a file that is missing, not
    JSON or holds no benchmark rows is a one-line :class:`DataError` naming it."""
    from components.errors import DataError

    payloads = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable JSON file ({exc})") from None
        rows = payload.get("rows") if isinstance(payload, dict) else None
        if not rows or not all(isinstance(r, dict) and "ndcg@10" in r for r in rows):
            raise DataError(f"{path}: not a `recops bench accuracy --json` file (no rows)")
        payloads.append(payload)
    return payloads


def summarise_seeds(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd over seeds per configuration. ``payloads``: the contents of ``recops
    bench accuracy --json`` files (one run each, or several); rows whose configurations
    differ in anything but the seed are summarised apart, in the order first seen."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for payload in payloads:
        for row in payload["rows"]:
            groups.setdefault(configuration(row, payload), []).append(row)
    summary = []
    for key, rows in groups.items():
        figures = [protocol_figures(r) for r in rows]
        summary.append(
            {
                "model": rows[0]["model"],
                "configuration": json.loads(key),
                "seeds": [r.get("train", {}).get("seed") for r in rows],
                **{name: mean_sd([f[name] for f in figures]) for name in SEED_FIGURES},
            }
        )
    return summary


def _cell(stat: dict[str, Any], spec: str, runs: int) -> str:
    """``mean ± sd`` (``(n/N)`` where only n of the N runs have the figure)."""
    if stat["mean"] is None:
        return "-"
    text = format(stat["mean"], spec)
    if stat["sd"] is not None:
        text += f" ± {format(stat['sd'], spec)}"
    return text if stat["n"] == runs else f"{text} ({stat['n']}/{runs})"


def format_seed_table(summary: list[dict[str, Any]]) -> str:
    """One line per configuration: the :data:`SEED_FIGURES` as mean ± sd."""
    low, high = summary[0]["configuration"]["targets"] if summary else (None, None)
    header = (
        f"{'model':<10}{'seeds':<16}{'valid NDCG@10':>18}{'HR@10 kept':>18}{'HR@10 excl':>18}"
        f"{'NDCG@10 kept':>18}{'NDCG@10 excl':>18}{'epochs':>12}"
        f"{f'CPU s to {low}':>18}{f'CPU s to {high}':>18}"
    )
    lines = [header]
    for entry in summary:
        runs = len(entry["seeds"])
        seeds = ",".join(str(s) for s in entry["seeds"])
        lines.append(
            f"{entry['model']:<10}{seeds:<16}{_cell(entry['valid_ndcg@10'], '.4f', runs):>18}"
            f"{_cell(entry['hr@10 kept'], '.4f', runs):>18}"
            f"{_cell(entry['hr@10 excluded'], '.4f', runs):>18}"
            f"{_cell(entry['ndcg@10 kept'], '.4f', runs):>18}"
            f"{_cell(entry['ndcg@10 excluded'], '.4f', runs):>18}"
            f"{_cell(entry['epochs'], '.1f', runs):>12}"
            f"{_cell(entry['cpu_seconds_to_target'], '.0f', runs):>18}"
            f"{_cell(entry['cpu_seconds_to_high_target'], '.0f', runs):>18}"
        )
    lines.append(
        "mean ± sd over the seeds of one configuration (same data, model, params, training "
        "and protocol); test split, full ranking over all items; kept / excl = history "
        "items ranked / removed; CPU s to X = process CPU seconds until valid NDCG@10 first "
        "reached X ((n/N): only n of the N runs reached it)"
    )
    return "\n".join(lines)
