"""The model registry: BentoML storage with lineage, champion pointer, history, rollback."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch

from components.errors import RegistryError
from components.registry.history import replay
from components.registry.store import ModelRegistry, model_info
from components.workspace import Workspace

from .conftest import TinyBundle, make_record, register_n


def pointer(registry: ModelRegistry) -> dict:
    return json.loads(registry.pointer_path.read_text())


def test_register_stores_weights_labels_and_record(registry: ModelRegistry) -> None:
    mv = registry.register(TinyBundle(0), make_record(0, ndcg=0.25))
    assert mv.status == "candidate" and mv.model_name == "sasrec"
    assert mv.tag == f"recops-sasrec:{mv.version}"
    assert mv.record.model_version == mv.version
    assert mv.record.data_version == "data-0" and mv.record.metrics_test["ndcg@10"] == 0.25
    state = torch.load(Path(mv.path) / "weights.pt")
    assert torch.equal(state["weight"], TinyBundle(0).model.weight)
    info = model_info(Path(mv.path))
    assert info["tag"] == mv.tag and Path(mv.path).parent == registry.models_dir
    assert info["labels"]["data_version"] == "data-0"
    assert info["labels"]["config_hash"] == "hash0"
    assert info["labels"]["status"] == "candidate"
    assert info["metadata"]["metrics_test"]["ndcg@10"] == 0.25
    assert registry.get(mv.version[:6]).version == mv.version  # unique prefix
    assert registry.get(mv.tag).version == mv.version  # full tag
    assert registry.champion() is None


def test_unknown_version_is_a_registry_error(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no registered model version"):
        registry.get("nope")
    with pytest.raises(RegistryError, match="no champion"):
        registry.rollback(actor="test")


def test_promote_promote_rollback_restores_v1_with_full_history(registry: ModelRegistry) -> None:
    v1, v2 = register_n(registry, 2)
    gate = {"promote": True, "challenger": {"ndcg@10": 0.1}, "champion": None}
    registry.promote(v1, actor="flow:retrain", reason="beat pop", gate=gate)
    registry.promote(v2, actor="cli:alice", reason="manual")
    assert registry.champion().version == v2
    assert registry.get(v1).status == "retired"

    restored = registry.rollback(actor="cli:bob")
    assert restored.version == v1 and restored.status == "champion"
    assert registry.get(v2).status == "retired"
    assert pointer(registry)["version"] == v1
    assert pointer(registry)["tag"] == restored.tag

    events = registry.history()
    assert [(e.action, e.version) for e in events] == [
        ("register", v1),
        ("register", v2),
        ("promote", v1),
        ("manual_promote", v2),
        ("rollback", v1),
    ]
    assert [e.seq for e in events] == list(range(5))
    assert events[3].previous_champion == v1 and events[4].previous_champion == v2
    assert events[3].metrics == {
        "challenger": {"ndcg@10": 0.2, "hr@10": 0.4},
        "champion": {"ndcg@10": 0.1, "hr@10": 0.2},
    }
    assert events[2].gate == gate and registry.get(v1).record.gate == gate
    assert events[4].actor == "cli:bob"
    # the status is mirrored into each model folder's labels
    assert model_info(Path(restored.path))["labels"]["status"] == "champion"
    assert model_info(Path(registry.get(v2).path))["labels"]["status"] == "retired"


def test_rollback_walks_back_the_champion_lineage(registry: ModelRegistry) -> None:
    v1, v2, v3 = register_n(registry, 3)
    for v in (v1, v2, v3):
        registry.promote(v, actor="t", reason="next")
    assert registry.rollback(actor="t").version == v2
    assert registry.rollback(actor="t").version == v1
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(actor="t")
    assert registry.rollback(to=v3, actor="t").version == v3
    assert registry.rollback(actor="t").version == v1


def test_reject_and_refusals(registry: ModelRegistry) -> None:
    v1, v2 = register_n(registry, 2)
    registry.promote(v1, actor="t", reason="first")
    rejected = registry.reject(v2, actor="flow", reason="no gain", gate={"promote": False})
    assert rejected.status == "rejected" and rejected.record.gate == {"promote": False}
    assert registry.history()[-1].metrics["champion"]["ndcg@10"] == pytest.approx(0.1)
    with pytest.raises(RegistryError, match="cannot be rejected"):
        registry.reject(v1, actor="t", reason="x")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(v1, actor="t", reason="x")
    # a manual override can still promote a rejected model, and says so
    assert registry.promote(v2, actor="cli:ops", reason="override").status == "champion"
    assert registry.history()[-1].action == "manual_promote"
    assert [m.status for m in registry.list()] == ["retired", "champion"]


def test_torn_history_line_and_stale_pointer_recover(registry: ModelRegistry) -> None:
    v1, v2 = register_n(registry, 2)
    registry.promote(v1, actor="t", reason="first")
    history_path = registry.workspace.registry_dir / "history.jsonl"
    # crash mid-append: half a promote line without its newline
    with history_path.open("ab") as fh:
        fh.write(b'{"seq": 3, "action": "promote", "vers')
    assert registry.champion().version == v1
    # crash after an append, before the pointer write: the pointer lags behind
    registry.pointer_path.write_text(json.dumps({"version": None}))
    assert registry.champion().version == v1  # derived from the history, not the pointer
    registry.promote(v2, actor="t", reason="second")  # next transaction repairs everything
    assert pointer(registry)["version"] == v2
    assert [e.seq for e in registry.history()] == [0, 1, 2, 3]
    assert history_path.read_bytes().endswith(b"\n")


def test_corrupt_history_line_is_reported(registry: ModelRegistry) -> None:
    register_n(registry, 1)
    history_path = registry.workspace.registry_dir / "history.jsonl"
    history_path.write_text("not json\n" + history_path.read_text())
    with pytest.raises(RegistryError, match="corrupt at line 1"):
        registry.list()


def _promote_many(root: str, versions: list[str], start: mp.synchronize.Event) -> None:
    registry = ModelRegistry(Workspace.at(root))
    start.wait()
    for version in versions:
        registry.promote(version, actor=f"proc:{versions[0]}", reason="race")


@pytest.mark.slow
def test_concurrent_promotions_leave_one_champion_and_complete_history(
    registry: ModelRegistry,
) -> None:
    versions = register_n(registry, 6)
    ctx = mp.get_context("fork")  # the workers touch files only, no torch threads
    start = ctx.Event()
    procs = [
        ctx.Process(target=_promote_many, args=(str(registry.workspace.root), chunk, start))
        for chunk in (versions[0::2], versions[1::2])
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    events = registry.history()
    promotions = [e for e in events if e.action == "manual_promote"]
    assert sorted(e.version for e in promotions) == sorted(versions)
    assert [e.seq for e in events] == list(range(12))
    # every promotion saw the champion the one before it left: no lost update
    chain = [None] + [e.version for e in promotions]
    assert [e.previous_champion for e in promotions] == chain[:-1]
    statuses = [m.status for m in registry.list()]
    assert statuses.count("champion") == 1 and statuses.count("retired") == 5
    champion = registry.champion().version
    assert champion == promotions[-1].version == pointer(registry)["version"]
    assert replay(events).champion == champion


def _promote_then_die_before_pointer(root: str, version: str) -> None:
    registry = ModelRegistry(Workspace.at(root))
    registry._write_pointer = lambda state: os._exit(3)  # the process dies right after the append
    registry.promote(version, actor="doomed", reason="crash test")


def test_process_killed_between_history_and_pointer_leaves_consistent_state(
    registry: ModelRegistry,
) -> None:
    v1, v2 = register_n(registry, 2)
    registry.promote(v1, actor="t", reason="first")
    proc = mp.get_context("fork").Process(
        target=_promote_then_die_before_pointer, args=(str(registry.workspace.root), v2)
    )
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 3
    assert pointer(registry)["version"] == v1  # the pointer never got written...
    assert registry.champion().version == v2  # ...but the committed history decides
    assert [m.status for m in registry.list()] == ["retired", "champion"]
    registry.rollback(actor="t")  # the lock was released by the dying process
    assert pointer(registry)["version"] == v1 == registry.champion().version
