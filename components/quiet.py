"""The one place that quiets third-party telemetry and logging.

Every entry point (the CLI, flows started by Prefect, the bento's processes, tests) calls
:func:`quiet_third_party` once, early. Noise filters for library log records and
warnings belong here, so what a user sees is decided in one file.

What is dropped, and why (each line says nothing a user can act on):

- pathspec's ``GitWildMatchPattern ... is deprecated`` and pydantic deprecation warnings
  raised inside third-party packages (DVC, BentoML's SDK): their code, not ours;
- BentoML's ``docker.cuda_version is not supported by bento v2, fallback to bento v1``;
- DVC's ``Initialized DVC repository.`` / ``You can now commit the changes to git.``
  (the workspace's data repository is recops' own; nobody commits by hand);
- Lightning's ``Tip: ... litlogger`` banner.

Everything else stays: any other third-party warning and every log record at WARNING or
above that is not listed here. Filters match the message text, so a library version that
rewords a line lets it through again (the e2e noise test then fails, which is the point).

Warnings are routed through logging (``logging.captureWarnings``, which Great
Expectations switches on at import anyway) so one filter on ``py.warnings`` catches them
whatever ``warnings`` filters later imports install (Feast resets DeprecationWarning to
``once`` at import, which undoes the blanket ignore below).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from components.errors import RecopsError

#: environment defaults: no phoning home (the network is often closed anyway), and
#: recops' own INFO logs routed through Prefect's handlers inside flow runs
QUIET_ENV: Mapping[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "components,services,benchmarks",
}

#: library loggers whose INFO lines repeat what recops reports itself
CHATTY_LOGGERS: tuple[str, ...] = (
    "great_expectations",
    "great_expectations.core",
    "great_expectations.data_context",
)

#: logger name -> message patterns dropped from it (see the module docstring)
NOISE: Mapping[str, tuple[str, ...]] = {
    # a deprecation raised inside an installed library (pathspec, pydantic, ibis under
    # Feast's DuckDB store, ...) is nothing a user can act on; recops' own stay visible
    "py.warnings": (r"site-packages/[^:]*:\d+: \w*Deprecat\w*:",),
    "bentoml.build": (r"docker\.cuda_version is not supported by bento v2",),
    "dvc.repo.init": (r"Initialized DVC repository", r"You can now commit the changes to git"),
    "lightning.pytorch.utilities.rank_zero": (r"litlogger",),
}

#: loggers whose INFO records are progress a user wants to see (per-epoch lines, stages)
RECOPS_LOGGERS: tuple[str, ...] = ("components", "services", "benchmarks")


def quiet_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set :data:`QUIET_ENV`'s defaults in ``env`` (default: this process's environment);
    values already set win. Returns the mapping it changed, for child processes."""
    target: dict[str, str] | os._Environ[str] = os.environ if env is None else env
    for key, value in QUIET_ENV.items():
        target.setdefault(key, value)
    return dict(target)


def quiet_loggers() -> None:
    """Library loggers down to WARNING; Lightning's own handler not repeated by the root's."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").propagate = False


class DropNoise(logging.Filter):
    """Drop records whose message matches any of ``patterns``."""

    def __init__(self, patterns: Iterable[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(p, re.DOTALL) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(p.search(text) for p in self.patterns)


def is_noise(logger_name: str, message: str) -> bool:
    """Whether ``message`` logged on ``logger_name`` is one of the lines dropped here."""
    return any(re.search(p, message, re.DOTALL) for p in NOISE.get(logger_name, ()))


def drop_noise() -> None:
    """Install :class:`DropNoise` on every logger of :data:`NOISE` (once each) and route
    warnings through logging so the ``py.warnings`` patterns apply."""
    logging.captureWarnings(True)
    for name, patterns in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise(patterns))


def quiet_third_party() -> None:
    """Telemetry off, chatty loggers down, known banners and deprecations dropped, no
    tracebacks for user errors in Prefect's run logs (idempotent)."""
    quiet_environment()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    quiet_loggers()
    drop_noise()
    quiet_user_error_tracebacks()


def show_recops_progress(level: int = logging.INFO) -> None:
    """Let recops' own INFO records (per-epoch lines, stage summaries) through.

    Inside a flow Prefect's handlers print and ship them; commands that run no flow call
    :func:`ensure_console_handler` as well so they reach the terminal.
    """
    for name in RECOPS_LOGGERS:
        logging.getLogger(name).setLevel(level)


class _ConsoleHandler(logging.StreamHandler):
    """recops' own stderr handler (a marker class, so it is installed once).

    It writes to the ``sys.stderr`` of the moment, not the one it was created with: while
    the training progress bar (a rich Live display) redirects stderr, a log line is then
    printed above the bar instead of into the bar's line.
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def ensure_console_handler() -> None:
    """Print log records on stderr when nothing else does (commands that run no flow).

    Plain ``HH:MM:SS message`` lines: readable in a terminal, a log file or CI alike.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = _ConsoleHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (progress bars, colour) or a file/pipe."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


class UserErrorTracebackFilter(logging.Filter):
    """Drop tracebacks from log records about user errors (:class:`RecopsError`): Prefect
    logs every failed task/flow with ``exc_info``; for a rejected batch the message is
    what matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RecopsError):
            record.exc_info = None
            record.exc_text = None
        return True


#: the loggers Prefect's engines log failed task and flow runs on (with ``exc_info``)
PREFECT_RUN_LOGGERS: tuple[str, ...] = ("prefect.engine", "prefect.flow_runs", "prefect.task_runs")


def quiet_user_error_tracebacks(logger_names: tuple[str, ...] = PREFECT_RUN_LOGGERS) -> None:
    """Install :class:`UserErrorTracebackFilter` on these loggers (idempotent).

    A filter on the logger itself, not on its handlers: it applies to every record logged
    there whatever handlers Prefect's logging setup attaches later, so it can be installed
    at any time (:func:`quiet_third_party` does, before any flow is imported).
    """
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorTracebackFilter) for f in logger.filters):
            logger.addFilter(UserErrorTracebackFilter())
