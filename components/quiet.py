"""The one place that quiets third-party telemetry and logging.

Every entry point (the CLI, flows started by Prefect, the bento's processes, tests) calls
:func:`quiet_third_party` once, early. Noise filters for library log records and
warnings belong here, so what a user sees is decided in one file.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping

from components.errors import RecopsError

#: environment defaults: no phoning home (the network is often closed anyway), and
#: recops' own INFO logs routed through Prefect's handlers inside flow runs
QUIET_ENV: Mapping[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "components,services",
}

#: library loggers whose INFO lines repeat what recops reports itself
CHATTY_LOGGERS: tuple[str, ...] = (
    "great_expectations",
    "great_expectations.core",
    "great_expectations.data_context",
)


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


def quiet_third_party() -> None:
    """Telemetry off, chatty loggers down, deprecation warnings hidden (idempotent)."""
    quiet_environment()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    quiet_loggers()


class UserErrorTracebackFilter(logging.Filter):
    """Drop tracebacks from log records about user errors (:class:`RecopsError`): Prefect
    logs every failed task/flow with ``exc_info``; for a rejected batch the message is
    what matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RecopsError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_error_tracebacks(logger_names: tuple[str, ...] = ("prefect", "")) -> None:
    """Install :class:`UserErrorTracebackFilter` on these loggers' handlers (call after the
    orchestrator set up its logging, i.e. after importing a flow)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, UserErrorTracebackFilter) for f in handler.filters):
                handler.addFilter(UserErrorTracebackFilter())
