"""A trivial BentoML service: BentoML's own ceiling for ``recops bench serving``.

It accepts the same ``/recommend`` body and answers a fixed-size response without any
model, feature lookup or batching, so the difference to the recommender is our work.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml

#: "1" turns BentoML's access log on: the benchmark mirrors the measured deployment's
#: ``serve.access_log`` so both services pay for the same logging
ACCESS_LOG_ENV = "RECOPS_ECHO_ACCESS_LOG"


@bentoml.service(
    name="recops-echo",
    workers=1,
    traffic={"timeout": 30, "max_concurrency": 256},
    logging={"access": {"enabled": os.environ.get(ACCESS_LOG_ENV, "1") == "1"}},
)
class Echo:
    @bentoml.api(route="/recommend")
    async def recommend(
        self,
        history: list[str] | None = None,
        user_id: str | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        exclude: list[str] | None = None,
    ) -> dict[str, Any]:
        items = [{"item_id": item, "score": 0.0} for item in (history or [])[:k]]
        return {"items": items, "model_version": "echo", "source": "model", "warnings": []}
