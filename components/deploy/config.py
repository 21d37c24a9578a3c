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
    # BentoML cancels (503) queued requests whose estimated wait exceeds this: keep it
    # well above the model call time on a busy machine
    max_latency_ms: int = Field(250, ge=1)
    max_concurrency: int = Field(256, ge=1)
    timeout_s: int = Field(30, ge=1)


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
