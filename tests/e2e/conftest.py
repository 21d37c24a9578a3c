"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator

import pytest

from components.data.spark import stop_spark_sessions
from components.features.store import forget_stores
from tests.conftest import service_unavailable


@pytest.fixture(scope="module")
def local_spark() -> Iterator[None]:
    """A module's local Spark sessions (pyspark and Java required), stopped after it with
    the Feast stores that used them."""
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        service_unavailable("Spark needs pyspark (dev extra) and Java 17+ on PATH")
    with pytest.MonkeyPatch.context() as patch:
        # C1-compiled JVM: half the start-up of a local session; these jobs are tiny
        patch.setenv("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")
        yield
        forget_stores()
        stop_spark_sessions()
