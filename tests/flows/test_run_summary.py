"""The end-of-run summary: whole lines whatever the sink."""

from __future__ import annotations

from typer.testing import CliRunner

from components.records import RunRecord
from flows.cli.run_cmds import print_run_summary, run_summary_lines
from flows.results import RetrainResult, RunOutcome

REASON = (
    "vs pop baseline: guardrail hr@10: 0.7967 vs 0.3367 (drop 0.0000, tolerance 0.01) "
    "and a long tail that would not fit in eighty columns at all"
)
RESULT = RetrainResult(
    record=RunRecord(
        run_id="r1",
        model_name="sasrec",
        config={},
        config_hash="test",
        code_rev="test",
        data_version="d5e2a1898618b3774cb43b5f397faf34",
        model_version="qm3vchhmf6xeeax4",
        metrics_test={"hr@10": 0.7967, "ndcg@10": 0.5269, "mrr": 0.4471},
        gate={"promote": True, "reference": "baseline", "reasons": [REASON]},
        report_path="/tmp/ws/runs/r1/report.html",
    ),
    outcome=RunOutcome(
        status="champion",
        serving_version="qm3vchhmf6xeeax4",
        url="http://127.0.0.1:3000",
        example_user="u0",
    ),
)


def test_summary_lines_are_whole_and_aligned() -> None:
    lines = run_summary_lines(RESULT)
    assert f"               - {REASON}" in lines
    assert "gate           PROMOTED (reference: baseline)" in lines
    assert "report         /tmp/ws/runs/r1/report.html" in lines
    labelled = [line for line in lines if line and not line.startswith(" ")][:5]
    assert all(line[15] != " " and line[14] == " " for line in labelled)


def test_summary_printed_to_a_pipe_keeps_every_line_whole() -> None:
    import typer

    app = typer.Typer()

    @app.command()
    def show() -> None:
        print_run_summary(RESULT)

    out = CliRunner().invoke(app, [], terminal_width=40).output
    assert out.splitlines()[0] == "== recops run =="
    assert f"               - {REASON}" in out.splitlines()
    assert "tolerance 0.01) and a long tail" in out
