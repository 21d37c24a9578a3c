"""The noise filters drop the known third-party lines and nothing else."""

from __future__ import annotations

import logging
import warnings

import pytest

from components.errors import DataError
from components.quiet import is_noise, quiet_third_party


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def collected():
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    # an earlier test (or an import such as GX) may have switched capture on while pytest's
    # per-test warning recorder was in place: reset so this test's warnings reach logging
    logging.captureWarnings(False)
    quiet_third_party()
    yield handler
    root.removeHandler(handler)
    logging.captureWarnings(False)


def test_known_banners_are_dropped_and_real_warnings_stay(collected: _Collect) -> None:
    logging.getLogger("dvc.repo.init").warning("Initialized DVC repository.\n")
    logging.getLogger("dvc.repo.init").warning("You can now commit the changes to git.\n")
    logging.getLogger("bentoml.build").warning(
        "docker.cuda_version is not supported by bento v2, fallback to bento v1"
    )
    logging.getLogger("bentoml.build").warning("bento build failed: disk full")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").warning(
        "💡 Tip: For seamless cloud logging ... try installing [litlogger](https://pypi.org/)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit(
            "GitWildMatchPattern ('gitwildmatch') is deprecated.",
            DeprecationWarning,
            "/venv/lib/python3.11/site-packages/pathspec/pathspec.py",
            326,
        )
        warnings.warn("recops: the learning rate is very high", UserWarning, stacklevel=1)
    assert collected.messages[0] == "bento build failed: disk full"
    assert len(collected.messages) == 2
    assert "learning rate is very high" in collected.messages[1]


def test_is_noise_names_the_pydantic_deprecation() -> None:
    line = (
        "/venv/lib/python3.11/site-packages/_bentoml_sdk/io_models.py:158: "
        "PydanticDeprecatedSince211: The `__get_pydantic_core_schema__` method is deprecated."
    )
    assert is_noise("py.warnings", line)
    assert not is_noise("py.warnings", "/work/components/x.py:3: UserWarning: real")


def test_a_library_deprecation_is_noise_and_ours_is_not() -> None:
    ibis = (
        "/venv/lib/python3.11/site-packages/ibis/backends/duckdb/__init__.py:332: "
        "DeprecationWarning: fetch_arrow_table() is deprecated, use to_arrow_table() instead."
    )
    ours = "/work/components/models/compiled.py:40: DeprecationWarning: torch.jit.trace is old"
    assert is_noise("py.warnings", ibis)
    assert not is_noise("py.warnings", ours)
    assert not is_noise("py.warnings", "/venv/site-packages/x.py:1: UserWarning: real")


def _raised(exc: Exception) -> BaseException:
    try:
        raise exc
    except Exception as caught:  # the exc_info a logging call carries
        return caught


@pytest.mark.parametrize("logger_name", ["prefect.task_runs", "prefect.flow_runs"])
def test_user_error_tracebacks_are_dropped_whatever_handler_comes_later(logger_name: str) -> None:
    quiet_third_party()  # before the handler exists, as at a command's start
    logger = logging.getLogger(logger_name)
    formatted: list[str] = []

    class _Format(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            formatted.append(logging.Formatter().format(record))

    handler = _Format()
    # only this handler: Prefect's own (its API log handler, where a worker set it up)
    # would warn about a record outside a flow run
    saved, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [handler], False  # what Prefect's setup does later
    try:
        user_error = _raised(DataError("batch rejected: 3 rows have no user_id"))
        logger.error("Task run failed", exc_info=user_error)
        logger.error("Task run failed", exc_info=_raised(ValueError("a bug")))
    finally:
        logger.handlers, logger.propagate = saved, propagate
    assert "Traceback" not in formatted[0] and "Task run failed" in formatted[0]
    assert "Traceback" in formatted[1] and "ValueError: a bug" in formatted[1]
