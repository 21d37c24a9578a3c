"""``recops`` CLI: importing this package registers every command on :data:`app`."""

from __future__ import annotations

from flows.cli import (  # noqa: F401  (imported for their command registrations)
    data_cmds,
    deploy_cmds,
    explain_cmds,
    features_cmds,
    models_cmds,
    monitor_cmds,
    run_cmds,
    server_cmds,
    stage_cmds,
    stats_cmds,
    status_cmds,
    train_cmds,
)
from flows.cli.app import app, main

__all__ = ["app", "main"]
