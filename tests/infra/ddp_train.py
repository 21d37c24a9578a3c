"""Train a tiny SASRec with the unchanged recops trainer under a given Lightning strategy.

Run as a script (``python tests/infra/ddp_train.py OUT STRATEGY DEVICES [PARTS]``):
Lightning's ``ddp`` launcher re-executes this command line once per extra rank, which only
works from a script entry point. Every rank that returns from training writes
``OUT/rank<LOCAL_RANK>.json``. With ``PARTS`` (a folder of Parquet events) each rank reads
only its own users (``stream_prepare(shard=...)``, buckets shared in ``OUT/buckets``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.data.config import SyntheticConfig  # noqa: E402  (after the path setup)


def _prepared(cfg, parts: Path | None, out: Path, devices: int):
    from components.data.prepare import prepare
    from components.data.stream import Shard, stream_prepare

    if parts is None:
        return prepare(_events(), cfg.data)
    rank = int(os.environ.get("LOCAL_RANK", "0"))  # unset in the first process: rank 0
    return stream_prepare(parts, cfg.data, shard=Shard(rank, devices), bucket_dir=out / "buckets")


#: the tiny model every DDP test trains (with ``train.devices`` and ``train.strategy``)
TINY_SASREC = [
    "model.name=sasrec",
    "model.params={hidden_size: 16, num_layers: 1, num_heads: 1}",
    "data.max_len=20",
    "train.max_epochs=2",
    "train.batch_size=64",
    "train.accelerator=cpu",
    "train.progress_bar=false",
    "train.num_threads=1",
]

SYNTHETIC = SyntheticConfig(
    n_users=120, n_items=40, n_events=2400, n_clusters=3, seed=5, start="2026-01-01T00:00:00Z"
)


def _events():
    from components.data.synthetic import generate_events

    return generate_events(SYNTHETIC)


def _weights_digest(model) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(out: Path, strategy: str, devices: int, parts: Path | None = None) -> None:
    import torch

    from components.config import load_config
    from components.training.trainer import train_model

    torch.set_num_threads(1)
    cfg = load_config(
        overrides=[*TINY_SASREC, f"train.devices={devices}", f"train.strategy={strategy}"]
    )
    prepared = _prepared(cfg, parts, out, devices)
    result = train_model(prepared, cfg.model, cfg.train, cfg.eval, out / "run")
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "epochs": result.epochs,
                "ndcg@10": result.metrics_test.get("ndcg@10"),
                "train_seconds": result.train_seconds,
                "pid": os.getpid(),
                "evaluated_users": result.metrics_test.get("n_users"),
                "trained_users": [int(u) for u in (prepared.split.train.lengths > 0).nonzero()[0]],
                "weights": _weights_digest(result.bundle.model),
                "popularity": float(result.bundle.item_popularity.sum()),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), *map(Path, sys.argv[4:5]))
