"""Serving and deployment settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    """The HTTP service: where it listens and its request limits."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    api_key_env: str = "RECOPS_API_KEY"
    max_k: int = Field(1000, ge=1)
    max_history: int = Field(1000, ge=1)
    max_batch_size: int = Field(64, ge=1)
    # a request that has waited this long in the batch queue is shed with a 503 and
    # Retry-After (services/batching.py: real queueing time); it is an overload valve,
    # so keep it far above a batch's run time on a busy machine
    max_latency_ms: int = Field(5000, ge=1)
    # queries waiting for the model beyond which new requests are shed at once (503)
    max_queue: int = Field(2048, ge=1)
    # where the bento runs the model: auto = CUDA when the machine has it, else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_concurrency: int = Field(256, ge=1)
    # intra-op threads for CPU inference (0: torch's default, one per core). One thread
    # keeps small-batch latency flat on a shared or oversubscribed machine: with more,
    # OpenMP workers spin-wait on descheduled siblings (p95 1 ms -> 200 ms measured)
    cpu_threads: int = Field(1, ge=0)
    timeout_s: int = Field(30, ge=1)
    # explanations (``"explain": true``, ``/explain``): bounded work per request
    explain_max_history: int = Field(50, ge=1, description="most recent events deleted")
    explain_max_k: int = Field(20, ge=1, description="most items explained per request")
    explain_top_events: int = Field(5, ge=1, description="events listed per item")


class DeployConfig(BaseModel):
    """Where the champion bento runs."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["local", "k8s", "none"] = "local"
    readiness_timeout_s: float = Field(120.0, gt=0)
    gpu: bool = True
    k8s_namespace: str = "recops"
    k8s_replicas: int = Field(2, ge=1)
    image: str | None = None
    cuda_version: str = "12.1"
    switch_drain_s: float = Field(1.0, ge=0)
    k8s_output_dir: str | None = None  # default: <workspace>/deploy/k8s
