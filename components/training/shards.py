"""Training on per-rank data: what a data-parallel rank shares with the others.

A sharded run (``PreparedData.sharded``, from ``train.shard_data`` or
``stream_prepare(shard=...)``) gives each rank only its own users; gradients are averaged
by DDP as usual. What is not a gradient must be combined explicitly: the evaluation sets
(every rank evaluates all of them, so every rank reports the same full-ranking metrics),
the training popularity saved in the bundle and the split's counts in the run record.
Outside an initialised process group (one process) all are the identity.
"""

from __future__ import annotations

import numpy as np
import torch

from components.data.prepare import PreparedData
from components.data.splits import EvalSet, concat_eval_sets
from components.errors import ConfigError
from components.models.base import Recommender
from components.models.config import ModelConfig


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


def require_rank_local_state(model_cfg: ModelConfig) -> None:
    """Refuse, before any data is read, a model that builds state from the training data
    besides its gradients, which a sharded run would build from one rank's users: a model
    with its own ``fit_data`` (a graph, neighbours, counts), an id table warm-started from
    the item transitions, or content features (their id mask is the items with training
    events)."""
    from components.models.zoo import get_model_class
    from components.training.trainer import content_features

    params = model_cfg.params
    why = None
    if get_model_class(model_cfg.name).fit_data is not Recommender.fit_data:
        why = f"model.name={model_cfg.name} builds state from the whole training data (fit_data)"
    elif params.get("item_init") == "transitions":
        why = "model.params.item_init=transitions starts from the whole data's item transitions"
    elif wanted := content_features(model_cfg):
        why = (
            f"model.params.item_features={sorted(wanted)} gives ids only to items with "
            "training events in the whole data"
        )
    if why is not None:
        raise ConfigError(
            f"{why}, which a sharded run (train.shard_data) holds on no single rank",
            hint="set train.shard_data=false for this model",
        )


#: the user and event counts of :meth:`Split.summary`, which add up over the ranks
_COUNTS = ("train_users", "train_events", "valid_users", "test_users", "train_only_users")


def whole_summary(prepared: PreparedData) -> dict[str, int | str]:
    """The split's summary over every rank's users: the counts summed over the ranks
    (itself on one process). A rank's sequences hold the other ranks' users empty, which
    its split counts as train-only: they are not counted here."""
    summary = prepared.split.summary()
    absent = int((prepared.sequences.lengths == 0).sum())
    summary["train_only_users"] = int(summary["train_only_users"]) - absent
    keys = [k for k in _COUNTS if isinstance(summary.get(k), int)]
    totals = summed(np.array([summary[k] for k in keys], dtype=np.float64))
    return {**summary, **{k: int(round(v)) for k, v in zip(keys, totals, strict=True)}}
