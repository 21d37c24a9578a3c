"""Commands: see flows/cli/app.py for the tree."""

from __future__ import annotations

from flows.cli.app import app  # noqa: F401
