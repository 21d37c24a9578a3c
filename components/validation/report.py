"""Typed results of validating one event batch.

:class:`ValidationReport` is what the runner returns, what ingest writes next to a
quarantined batch (``report.json``) and what the CLI prints. :class:`BatchStats` is the
small summary of an accepted batch that the next batch's drift checks compare against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["failure", "warning"]


class ExpectationResult(BaseModel):
    """One expectation of the suite, evaluated over the whole batch (all chunks merged)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    column: str | None = None
    success: bool
    severity: Severity = "failure"
    observed: Any = None
    details: str = ""
    expectation_type: str | None = None

    @property
    def label(self) -> str:
        """``expect_x(column)``: how summaries name this expectation."""
        return f"{self.name}({self.column})" if self.column else self.name


class ValidationReport(BaseModel):
    """The outcome of the event-contract suite on one batch.

    ``passed`` is False when any expectation of severity ``failure`` failed; failed
    ``warning`` expectations (drift by default) are reported but do not block the batch.
    """

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    passed: bool
    n_rows: int
    n_users: int
    n_items: int
    results: list[ExpectationResult]
    data_docs_path: str | None = None
    summary: str
    validated_at: datetime | None = None
    seconds: float | None = None
    n_chunks: int = 1
    data_docs_pages: list[str] = []

    @property
    def failures(self) -> list[ExpectationResult]:
        """Failed expectations that block the batch."""
        return [r for r in self.results if not r.success and r.severity == "failure"]

    @property
    def root_failures(self) -> list[ExpectationResult]:
        """Failures that were evaluated (not mere consequences of a missing column)."""
        return [r for r in self.failures if not r.details.startswith("not evaluated")]

    @property
    def warnings(self) -> list[ExpectationResult]:
        """Failed expectations that are only reported."""
        return [r for r in self.results if not r.success and r.severity == "warning"]


class BatchStats(BaseModel):
    """Volume summary of one accepted batch: the baseline for the next batch's drift checks."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = None
    n_rows: int
    n_users: int
    n_items: int
    min_timestamp: datetime | None = None
    max_timestamp: datetime | None = None


def summarize(results: list[ExpectationResult], n_rows: int) -> str:
    """Short human text: the verdict plus each failed expectation by name."""
    failures = [r for r in results if not r.success and r.severity == "failure"]
    evaluated = [r for r in failures if not r.details.startswith("not evaluated")]
    skipped = len(failures) - len(evaluated)
    warnings = [r for r in results if not r.success and r.severity == "warning"]
    parts: list[str] = []
    if failures:
        parts.append(
            f"FAILED {len(evaluated)} of {len(results)} expectations on {n_rows} rows: "
            + "; ".join(f"{r.label}: {r.details}" for r in evaluated)
            + (f" ({skipped} more not evaluated: their column is missing)" if skipped else "")
        )
    else:
        parts.append(f"passed {len(results)} expectations on {n_rows} rows")
    if warnings:
        parts.append("warnings: " + "; ".join(f"{r.label}: {r.details}" for r in warnings))
    return ". ".join(parts)
