"""A trivial BentoML service: BentoML's own ceiling for ``recops bench serving``.

It accepts the same ``/recommend`` body and answers a fixed-size response without any
model, feature lookup or batching, so the difference to the recommender is our work.
"""

from __future__ import annotations

from typing import Any

import bentoml


@bentoml.service(name="recops-echo", workers=1, traffic={"timeout": 30, "max_concurrency": 256})
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
