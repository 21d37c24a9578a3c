"""The serving worker's start-up imports only what answering needs: its import time is
part of every process start (a first deploy, a supervisor restart)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from components.data.sequences import Vocabulary
from components.models.bundle import ModelBundle, build_model

#: imported by training, data and the ANN path, never by a worker answering /recommend
NOT_IN_THE_WORKER = ("pandas", "scipy", "faiss", "sklearn", "lightning", "feast")

WORKER = """
import json, sys
from pathlib import Path
import torch
import components.deploy.swap, components.monitoring.servelog, services.batching
import services.guard, services.metrics, services.servinglog, services.settings, services.wire
from components.models.ann import AnnIndex
from components.models.bundle import ModelBundle
from services.engine import Engine

bundle = ModelBundle.load(Path(sys.argv[1]))
assert AnnIndex.load(Path(sys.argv[1]), 8) is None
engine = Engine(bundle, "v", torch.device("cpu"))
plan = engine.plan(list(bundle.vocab.items[:3]), 5, True, [])
answer = engine.render(plan, engine.score([plan.query])[0])
print(json.dumps({"items": len(answer["items"]), "modules": sorted(sys.modules)}))
"""


def test_a_worker_answers_without_importing_pandas_scipy_or_faiss(tmp_path: Path) -> None:
    n_items = 30
    vocab = Vocabulary(users=("u0",), items=tuple(f"i{j}" for j in range(n_items)))
    model = build_model("sasrec", {}, n_items, 1, 12)
    ModelBundle(model, vocab, "sasrec", {}, 12, np.ones(n_items + 1)).save(tmp_path)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["items"] == 5
    loaded = {name.split(".")[0] for name in found["modules"]}
    assert not loaded & set(NOT_IN_THE_WORKER)
