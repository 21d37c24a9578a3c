"""Train a tiny SASRec with the unchanged recops trainer under a given Lightning strategy.

Run as a script (``python tests/infra/ddp_train.py OUT STRATEGY DEVICES``): Lightning's
``ddp`` launcher re-executes this command line once per extra rank, which only works
from a script entry point. Every rank that returns from training writes ``OUT/rank<LOCAL_RANK>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(out: Path, strategy: str, devices: int) -> None:
    import torch

    from components.config import load_config
    from components.data.config import SyntheticConfig
    from components.data.prepare import prepare
    from components.data.synthetic import generate_events
    from components.training.trainer import train_model

    torch.set_num_threads(1)
    cfg = load_config(
        overrides=[
            "model.name=sasrec",
            "model.params={hidden_size: 16, num_layers: 1, num_heads: 1}",
            "data.max_len=20",
            "train.max_epochs=2",
            "train.batch_size=64",
            "train.accelerator=cpu",
            f"train.devices={devices}",
            f"train.strategy={strategy}",
            "train.progress_bar=false",
            "train.num_threads=1",
        ]
    )
    events = generate_events(
        SyntheticConfig(
            n_users=120,
            n_items=40,
            n_events=2400,
            n_clusters=3,
            seed=5,
            start="2026-01-01T00:00:00Z",
        )
    )
    prepared = prepare(events, cfg.data)
    result = train_model(prepared, cfg.model, cfg.train, cfg.eval, out / "run")
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "epochs": result.epochs,
                "ndcg@10": result.metrics_test.get("ndcg@10"),
                "train_seconds": result.train_seconds,
                "pid": os.getpid(),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
