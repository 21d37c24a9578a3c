"""Serving and deployment settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from components.monitoring.config import ServingLogConfig


class ServeConfig(BaseModel):
    """The HTTP service: where it listens and its request limits."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    # The API key is referenced, never stored: the name of an environment variable, or a
    # file (a mounted secret; it wins when both are given). The bento records the
    # references and whether auth is required, decided at deploy time
    # (components/deploy/auth.py): "auto" requires it when the key is set where the deploy
    # runs *or* the current deployment already requires it, so a redeploy from a shell
    # without the key fails instead of serving without authentication; "off" is the only
    # way to drop it.
    api_key_env: str = "RECOPS_API_KEY"
    api_key_file: str | None = None
    auth: Literal["auto", "required", "off"] = "auto"
    max_k: int = Field(1000, ge=1)
    max_history: int = Field(1000, ge=1)
    # size limits on every request dimension (one-line 4xx beyond them)
    max_batch_requests: int = Field(256, ge=1)
    max_item_id_length: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
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
    # the model call of a request (components/models/compiled.py): onnx = the model's
    # scoring exported to ONNX and run by ONNX Runtime (CPU), traced = a frozen TorchScript
    # trace of it, eager = the model itself. A compiled form is checked against the model
    # at load (same top-k, scores within 1e-5) and falls back to the next (onnx -> traced
    # -> eager) when it does not stand for it; /metadata says which serves and why.
    # Measured (bench SASRec, 12,101 items, a 3-item history, one thread): eager 790 us,
    # traced 330 us, onnx 140-160 us per call
    scorer: Literal["onnx", "traced", "eager"] = "onnx"
    # approximate top-k (components/models/ann.py, FAISS IVF, built at bento build time):
    # auto = for catalogues of at least ann_min_items items; below that the exact product
    # and top-k is cheap (recops bench ann) and the approximation buys nothing.
    # Measured on a SASRec trained on Beauty (its own 12,101-item table, queried with its
    # encodings of 300 real histories; 100k and 1M by noisy replication), one thread, load
    # ~10: exact top-10 0.1 / 0.9 / 26 ms per query at 12k / 100k / 1M items; the index at
    # nprobe 32 found 97 / 88 / 87 % of the exact top 10, at nprobe 128 100 / 98 / 95 %
    # in 0.1 / 0.3 / 1.3 ms. Hence 128 cells: recall first, still 20x faster at 1M; and
    # the index from 100k items, where exact search costs about as much as the rest of
    # the model call
    ann: Literal["auto", "on", "off"] = "auto"
    ann_min_items: int = Field(100_000, ge=1)
    ann_nprobe: int = Field(128, ge=1, description="IVF cells searched: more = higher recall")
    timeout_s: int = Field(30, ge=1)
    # BentoML's access log: one formatted line per request into the backend's log file
    # (unbounded growth, CPU on every request); off by default because the serving log
    # (``log``) already records every answered request in Parquet
    access_log: bool = False
    log: ServingLogConfig = ServingLogConfig()
    # explanations (``"explain": true``, ``/explain``): bounded work per request
    explain_max_history: int = Field(50, ge=1, description="most recent events deleted")
    explain_max_k: int = Field(20, ge=1, description="most items explained per request")
    explain_top_events: int = Field(5, ge=1, description="events listed per item")


class ChallengerConfig(BaseModel):
    """A challenger beside the champion (``deploy.mode: shadow | canary``): how traffic
    reaches it, when a canary is stopped, and how ``recops deploy conclude`` decides."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(0.1, gt=0, le=1, description="canary: share of users (sticky)")
    mirror_share: float = Field(1.0, gt=0, le=1, description="shadow: share of requests")
    timeout_s: float = Field(2.0, gt=0, description="shadow: a mirrored request's limit")
    queue: int = Field(256, ge=1, description="shadow: copies waiting; beyond it, dropped")
    # shadow: the CPU priority of its whole process tree (components/deploy/priority.py):
    # idle = SCHED_IDLE, only CPU the champion leaves unused (copies it cannot keep up
    # with time out or are dropped, counted); low = nice 19; normal = as the champion.
    # A canary answers users and always runs at normal priority.
    shadow_priority: Literal["idle", "low", "normal"] = "idle"
    # shadow: a copy is sent only while at most this many live requests are open at the
    # proxy (0 = only while the champion is idle; None = always); copies that wait past
    # timeout_s are dropped as stale, counted. SCHED_IDLE alone left the shadow's model
    # beside the champion's on 2 vCPUs (c=8 p50 +30 %); gated: +7.6 %, 61 % of the
    # copies dropped at that closed-loop load (recops bench serving --shadow)
    mirror_max_live: int | None = Field(0, ge=0)
    max_error_rate: float = Field(0.05, ge=0, le=1, description="canary: stop beyond it")
    min_requests: int = Field(20, ge=1, description="canary answers before the error check")
    # the online decision (components/deploy/online.py)
    k: int = Field(10, ge=1, description="hit-rate@k and top-k agreement")
    alpha: float = Field(0.05, gt=0, lt=1, description="one-sided test level")
    min_lists: int = Field(200, ge=1, description="lists with feedback per arm to decide")
    # the retrain flow (flows/online.py): how long it pauses before deciding by itself
    observe_s: float = Field(3600.0, gt=0, description="paused this long, then decide")
    poll_s: int = Field(10, ge=1, description="how often the paused run checks for resume")


class BentoBuildConfig(BaseModel):
    """Settings every target shares: how the bento's container image is described, and
    the deployment mode (replace the champion, or run a shadow or canary beside it)."""

    model_config = ConfigDict(extra="forbid")

    gpu: bool = True
    image: str | None = None
    cuda_version: str = "12.1"
    mode: Literal["replace", "shadow", "canary"] = "replace"
    challenger: ChallengerConfig = ChallengerConfig()


class LocalDeployConfig(BentoBuildConfig):
    """``deploy.target: local``: a bento process behind the local proxy, switched over
    only after readiness and a smoke test pass."""

    target: Literal["local"] = "local"
    readiness_timeout_s: float = Field(120.0, gt=0)
    # a deploy command started while another holds the deploy lock waits this long, then
    # fails with one line naming the holder (components/deploy/local.py: deploy_lock)
    lock_wait_s: float = Field(5.0, ge=0)
    switch_drain_s: float = Field(1.0, ge=0)
    # a new version whose bento differs only in its model is loaded by the running
    # backend (components/deploy/swap.py: ~1 s instead of a process start); off = always
    # start a new process
    hot_swap: bool = True
    # supervision of the local deployment (components/deploy/supervisor.py)
    supervise: bool = True
    supervise_poll_s: float = Field(0.5, gt=0)
    restart_backoff_s: float = Field(1.0, gt=0)  # doubles per failed restart, 30 s at most
    max_restarts: int = Field(3, ge=1)  # restarts within crash_window_s before a rollback
    crash_window_s: float = Field(300.0, gt=0)
    unhealthy_after_s: float = Field(15.0, gt=0)  # alive but not ready this long = down


class KubernetesDeployConfig(BentoBuildConfig):
    """``deploy.target: k8s``: build the bento, render and validate the manifests, and
    ``kubectl apply`` them when ``apply`` is on (needs kubectl and a cluster context)."""

    target: Literal["k8s"]
    k8s_namespace: str = "recops"
    k8s_replicas: int = Field(2, ge=1)
    k8s_output_dir: str | None = None  # default: <workspace>/deploy/k8s
    k8s_workspace_size: str = "20Gi"  # the claim both arms share (serving logs, feedback)
    # where this machine sees that claim's serving-log/ (a mount or a sync of it) for
    # `recops deploy compare`; default: <workspace>/serving-log
    k8s_serving_log_dir: str | None = None
    apply: bool = False
    kubectl_timeout_s: float = Field(120.0, gt=0)


class NoDeployConfig(BentoBuildConfig):
    """``deploy.target: none``: the registry changes, nothing is served (tests, batch-only)."""

    target: Literal["none"]


#: where the champion bento runs: one settings class per target, chosen by ``target``
#: (a new target = a new class here and one entry in components.deploy.targets.TARGETS)
DeployConfig = Annotated[
    LocalDeployConfig | KubernetesDeployConfig | NoDeployConfig,
    Field(discriminator="target"),
]
