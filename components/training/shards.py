"""Training on per-rank data: what a data-parallel rank shares with the others.

A sharded run (``PreparedData.sharded``, from ``stream_prepare(shard=...)``) gives each
rank only its own users; gradients are averaged by DDP as usual. What is not a gradient
must be combined explicitly: the evaluation sets (every rank evaluates all of them, so
every rank reports the same full-ranking metrics) and the training popularity saved in
the bundle. Outside an initialised process group (one process) both are the identity.
"""

from __future__ import annotations

import numpy as np
import torch

from components.data.splits import EvalSet, concat_eval_sets
from components.errors import TrainingError
from components.models.base import Recommender
from components.models.bundle import ModelBundle


def _world() -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def gathered(eval_set: EvalSet) -> EvalSet:
    """Every rank's examples, in rank order (``eval_set`` itself on one process)."""
    import torch.distributed as dist

    world = _world()
    if world == 1:
        return eval_set
    parts: list[EvalSet | None] = [None] * world
    dist.all_gather_object(parts, eval_set)
    return concat_eval_sets([part for part in parts if part is not None])


def summed(counts: np.ndarray) -> np.ndarray:
    """``counts`` added over every rank (itself on one process)."""
    import torch.distributed as dist

    if _world() == 1:
        return counts
    total = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    dist.all_reduce(total)  # gloo and NCCL both sum float64 on the CPU/GPU tensor given
    return total.numpy()


def require_rank_local_state(bundle: ModelBundle) -> None:
    """Refuse a model whose data-dependent state (``fit_data``: a graph, neighbours) would
    be built from one rank's users only and so differ between the replicas."""
    if type(bundle.model).fit_data is not Recommender.fit_data:
        raise TrainingError(
            f"{bundle.model_name} builds state from the whole training data (fit_data), "
            "which a sharded run holds on no single rank",
            hint="train it without shard-per-rank reading (stream_prepare without shard)",
        )
