"""The run report of a real small training run, opened in real headless Chromium."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from components.config import config_from_mapping
from components.data.prepare import prepare
from components.lifecycle.challenge import challenge
from components.lifecycle.train import train
from components.records import RunRecord
from components.reporting.page import write_report


def cell_value(dom: str, **attrs: str) -> str:
    """Text of the first element carrying every ``data-<k>="<v>"`` attribute."""
    for match in re.finditer(r"<(td|b|code|span)([^>]*)>([^<]*)<", dom):
        found = {k: unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', match.group(2))}
        if all(found.get(k.replace("_", "-")) == v for k, v in attrs.items()):
            return unescape(match.group(3))
    raise AssertionError(f"no element with {attrs}")


@pytest.fixture(scope="module")
def small_run(tiny_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> RunRecord:
    """Train GRU4Rec for 3 epochs through lifecycle.train, gate it against pop, and record
    what the retrain flow records."""
    run_dir = tmp_path_factory.mktemp("runs") / "r-small"
    cfg = config_from_mapping(
        {
            "data": {"max_len": 20},
            "model": {"name": "gru4rec", "params": {"hidden_size": 16}},
            "train": {"max_epochs": 3, "batch_size": 64, "lr": 5e-3, "seed": 0},
            "gate": {"bootstrap_samples": 500},
        }
    )
    prepared = prepare(tiny_events, cfg.data)
    trained = train(prepared, cfg, run_dir, data_version="d" * 32)
    decision = challenge(
        prepared,
        trained.result.bundle,
        None,
        gate_cfg=cfg.gate,
        eval_cfg=cfg.eval,
        train_cfg=cfg.train,
        run_dir=run_dir,
    )
    return trained.record.model_copy(
        update={
            "validation": {"summary": "passed 12/12 expectations", "n_rows": len(tiny_events)},
            "model_version": "v-small",
            "gate": decision.model_dump(mode="json"),
            "status": "champion" if decision.promote else "rejected",
        }
    )


@pytest.mark.slow
def test_report_page_loads_cleanly_shows_plots_and_the_records_numbers(
    small_run: RunRecord, chromium
) -> None:
    run_dir = Path(small_run.artifact_dir)
    path = write_report(small_run, run_dir)
    assert path == run_dir / "report.html"
    assert {p.name for p in (run_dir / "plots").glob("*.png")} == {
        "training_curves.png",
        "gate.png",
        "by_group.png",
    }
    page = chromium(path)
    assert page.console == []
    assert len(re.findall(r'<img class="plot"[^>]*data-loaded="1"', page.dom)) == 3

    gate = small_run.gate
    assert gate is not None and gate["reference"] == "baseline"
    for metric in ("ndcg@10", "hr@10", "mrr"):
        c, r = gate["challenger"][metric], gate["baseline"][metric]
        assert cell_value(page.dom, metric=metric, side="challenger") == f"{c:.4f}"
        assert cell_value(page.dom, metric=metric, side="reference") == f"{r:.4f}"
        assert cell_value(page.dom, metric=metric, side="delta") == f"{c - r:+.4f}"
    assert cell_value(page.dom, key="p_value") == f"{gate['p_value']:.4f}"
    low, high = gate["delta_ci"]
    assert low <= gate["challenger"]["ndcg@10"] - gate["baseline"]["ndcg@10"] <= high
    assert cell_value(page.dom, key="delta_ci") == f"[{low:+.4f}, {high:+.4f}]"
    for entry in small_run.history:
        epoch = str(int(entry["epoch"]))
        assert cell_value(page.dom, key="train_loss", epoch=epoch) == f"{entry['train_loss']:.4f}"
        assert cell_value(page.dom, key="ndcg@10", epoch=epoch) == f"{entry['ndcg@10']:.4f}"
    for name, rows in small_run.breakdowns.items():
        assert sum(r["n_users"] for r in rows) == small_run.split["test_users"]
        for row in rows:
            shown = cell_value(page.dom, breakdown=name, bucket=row["bucket"], key="ndcg@10")
            assert shown == f"{row['metrics']['ndcg@10']:.4f}"
    assert cell_value(page.dom, key="data_version") == small_run.data_version
    assert cell_value(page.dom, key="model_version") == "v-small"
    assert cell_value(page.dom, key="seen_offset") == f"{small_run.seen_offset:+.2f}"


def test_group_means_weighted_by_users_give_back_the_overall_metric(small_run: RunRecord) -> None:
    overall = small_run.metrics_test["ndcg@10"]
    for rows in small_run.breakdowns.values():
        total = sum(r["n_users"] for r in rows)
        weighted = sum(r["metrics"]["ndcg@10"] * r["n_users"] for r in rows) / total
        assert weighted == pytest.approx(overall, abs=1e-6)


def test_console_capture_sees_a_broken_page(tmp_path: Path, chromium) -> None:
    """The check above can fail: a page with a script error and a blocked fetch is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!doctype html><meta http-equiv="Content-Security-Policy" content="default-src '
        "'none'; script-src 'unsafe-inline'\"><img src=\"http://example.invalid/x.png\">"
        "<script>notDefined()</script>"
    )
    console = chromium(page).console
    assert any("Content Security Policy" in m for m in console)
    assert any("notDefined" in m for m in console)
