"""The ASGI factory of recops' temporary Prefect server, through Prefect's public API.

:mod:`flows.temporary_server` serves it with ``uvicorn --factory``: the same app Prefect's
own temporary server runs (``create_app`` with ``ephemeral=True``: no UI, no background
services; ``final=True``: the only app this process builds), asked for by its documented
arguments rather than by the private environment variables Prefect sets for its child.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_temporary_app() -> FastAPI:
    """Prefect's REST API as a temporary server (``uvicorn --factory`` calls this)."""
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)
