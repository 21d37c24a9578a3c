"""Which data-parallel process this is, read from what the launcher put in the environment.

Under ``train.strategy: ddp`` every rank runs the whole command (``recops train``):
Lightning's launcher re-executes the command line once per extra local rank, setting
``NODE_RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in the processes it starts (its own
process, local rank 0, has none of them before training starts); torchrun starts every
process itself with ``RANK`` and ``WORLD_SIZE``. A rank is known before any data is read,
so each rank can prepare only its own users (``train.shard_data``) and only rank 0 writes
the run's record.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from components.data.stream import Shard
from components.errors import ConfigError
from components.training.config import TrainConfig

#: the run id rank 0 chose, inherited by the ranks Lightning's launcher starts, so every
#: rank of ``recops train`` works in one run folder
RUN_ID_ENV = "RECOPS_RUN_ID"


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name, "0")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not a rank") from None


def is_rank_zero(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is the data-parallel run's first (or its only) process."""
    return all(_int(environ, name) == 0 for name in ("RANK", "NODE_RANK", "LOCAL_RANK"))


def devices_per_node(train_cfg: TrainConfig) -> int:
    """``train.devices`` as a count (a number, or a list of device indices ``"0,1"``);
    ``auto`` and ``-1`` leave the count to Lightning and are refused here."""
    devices = train_cfg.devices
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        count = int(devices)
    except ValueError:
        count = -1
    if count < 1:
        raise ConfigError(
            f"train.shard_data needs train.devices as a number of devices, not {devices!r}",
            hint="set train.devices=N (per node) and train.num_nodes=M",
        )
    return count


def data_shard(train_cfg: TrainConfig, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """This process's share of the users under ``train.shard_data`` in a data-parallel
    run (``strategy: ddp``, ``devices`` x ``num_nodes`` > 1); None otherwise (one process
    reads everything).

    The rank is ``RANK`` when torchrun set it, else ``NODE_RANK`` x devices +
    ``LOCAL_RANK`` (Lightning's numbering; both 0 in the launcher's own process). Raises
    :class:`ConfigError` for another strategy (``ddp_spawn`` pickles the one process's
    data into every rank) or a torchrun world that is not ``devices`` x ``num_nodes``."""
    if not train_cfg.shard_data:
        return None
    if train_cfg.strategy != "ddp":
        raise ConfigError(
            f"train.shard_data needs train.strategy=ddp (each rank reading its own users), "
            f"not {train_cfg.strategy!r}",
            hint="set train.strategy=ddp, or train.shard_data=false",
        )
    per_node = devices_per_node(train_cfg)
    world = per_node * train_cfg.num_nodes
    if "RANK" in environ:  # torchrun
        launched = _int(environ, "WORLD_SIZE")
        if launched != world:
            raise ConfigError(
                f"the launcher started {launched} processes but train.devices x "
                f"train.num_nodes is {world}"
            )
        rank = _int(environ, "RANK")
    else:
        rank = _int(environ, "NODE_RANK") * per_node + _int(environ, "LOCAL_RANK")
    return Shard(rank, world) if world > 1 else None


@contextmanager
def shared_run_id(new: Callable[[], str]) -> Iterator[str]:
    """The run id every rank of one run works under: rank 0 chooses it (``new()``) and
    leaves it in the environment for the block, where the ranks Lightning's launcher
    starts from it find it. Ranks started apart (torchrun) choose their own; only rank
    0's folder gets a record and a bundle."""
    inherited = os.environ.get(RUN_ID_ENV)
    if inherited is not None and not is_rank_zero():
        yield inherited
        return
    run_id = new()
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield run_id
    finally:
        os.environ.pop(RUN_ID_ENV, None)
