"""The bounded-memory data path gives the in-memory path's vocabulary and split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.data.config import DataConfig, SyntheticConfig
from components.data.prepare import prepare
from components.data.stream import (
    BUDGET_KEY,
    ROW,
    Shard,
    UserBuckets,
    list_event_files,
    plan_passes,
    read_user_buckets,
    scan_events,
    stream_prepare,
    stream_sequences,
    tail_length,
    user_passes,
    write_events_dataset,
    write_user_buckets,
)
from components.data.synthetic import iter_event_chunks
from components.errors import DataError

SYNTH = SyntheticConfig(
    n_users=300, n_items=80, n_events=12_000, start="2024-01-01T00:00:00Z", seed=3
)


PER_FILE = 3_000


def _generated() -> pd.DataFrame:
    return pd.concat(list(iter_event_chunks(SYNTH, PER_FILE)), ignore_index=True)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parts")
    write_events_dataset(SYNTH, folder, events_per_file=PER_FILE)
    return folder


def test_partitioned_files_hold_the_generated_events(parts: Path) -> None:
    files = list_event_files(parts)
    assert len(files.paths) >= 3
    assert files.n_rows == SYNTH.n_events
    written = pd.concat([pd.read_parquet(p) for p in files.paths], ignore_index=True)
    expected = _generated()
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)


@pytest.mark.parametrize("budget", [4096, 351])
def test_stream_prepare_equals_the_in_memory_split(parts: Path, budget: int) -> None:
    cfg = DataConfig(max_len=6, memory_budget_mb=budget)
    streamed = stream_prepare(parts, cfg)
    plan = plan_passes(SYNTH.n_events, SYNTH.n_users, SYNTH.n_items, tail_length(cfg), budget)
    assert (plan.passes > 1) == (budget < 1000)
    full = prepare(_generated(), cfg)
    assert streamed.vocab == full.vocab
    for name in ("valid", "test"):
        ours, theirs = getattr(streamed.split, name), getattr(full.split, name)
        np.testing.assert_array_equal(ours.users, theirs.users)
        assert torch.equal(ours.histories, theirs.histories)
        assert torch.equal(ours.targets, theirs.targets)
        assert ours.events is not None and theirs.events is not None
        assert torch.equal(ours.events, theirs.events)
        np.testing.assert_array_equal(ours.target_events, theirs.target_events)
    # training windows (the last max_len + 1 items) are the same for every user
    assert torch.equal(
        streamed.split.train.padded(cfg.max_len + 1), full.split.train.padded(cfg.max_len + 1)
    )
    assert streamed.sequences.lengths.max() == tail_length(cfg)


def test_small_budget_uses_more_passes_with_the_same_result() -> None:
    assert (
        plan_passes(10_000_000, 200_000, 50_000, 53, 1536).passes
        > plan_passes(10_000_000, 200_000, 50_000, 53, 8192).passes
    )


def test_budget_too_small_names_the_config_key(parts: Path) -> None:
    with pytest.raises(DataError, match=BUDGET_KEY.replace(".", r"\.")):
        stream_prepare(parts, DataConfig(max_len=6, memory_budget_mb=64))


def _copy_parts(parts: Path, target: Path) -> list[Path]:
    target.mkdir()
    copies = []
    for path in sorted(parts.glob("*.parquet")):
        copies.append(target / path.name)
        copies[-1].write_bytes(path.read_bytes())
    return copies


def test_corrupt_file_in_the_middle_rejects_the_batch_naming_it(
    parts: Path, tmp_path: Path
) -> None:
    copies = _copy_parts(parts, tmp_path / "batch")
    middle = copies[len(copies) // 2]
    middle.write_bytes(middle.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"{middle.name}: not a readable Parquet file.*batch row"):
        stream_prepare(tmp_path / "batch", DataConfig(max_len=6))


def test_bad_row_in_the_middle_file_names_file_and_row(parts: Path, tmp_path: Path) -> None:
    copies = _copy_parts(parts, tmp_path / "batch")
    middle = copies[1]
    frame = pd.read_parquet(middle)
    frame["timestamp"] = frame["timestamp"].astype(str)
    frame.loc[16, "timestamp"] = "not a time"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), middle)
    before = pq.ParquetFile(copies[0]).metadata.num_rows
    with pytest.raises(
        DataError,
        match=rf"{middle.name}: column 'timestamp' is not a time at row 17 of the file \(batch row {before + 17}\)",
    ):
        stream_prepare(tmp_path / "batch", DataConfig(max_len=6))


def test_catalogue_items_join_the_streamed_vocabulary(parts: Path) -> None:
    from components.data.synthetic import synthetic_catalogue

    catalogue = synthetic_catalogue(SYNTH)
    cfg = DataConfig(max_len=6)
    streamed = stream_prepare(parts, cfg, catalogue)
    full = prepare(_generated(), cfg, catalogue)
    assert streamed.vocab == full.vocab
    assert streamed.catalogue_report == full.catalogue_report
    assert torch.equal(streamed.split.test.histories, full.split.test.histories)


def _bucketed(parts: Path, target: Path, n_buckets: int) -> UserBuckets:
    files = list_event_files(parts)
    return write_user_buckets(scan_events(files), target, n_buckets)


def test_user_buckets_hold_every_row_once_with_each_user_in_one_bucket(
    parts: Path, tmp_path: Path
) -> None:
    buckets = _bucketed(parts, tmp_path / "buckets", 4)
    assert buckets.n_rows == SYNTH.n_events and buckets.n_buckets == 4
    owners: dict[str, int] = {}
    for k in range(buckets.n_buckets):
        frame = buckets.scan([k]).collect()
        assert frame[ROW].is_sorted()  # input order kept inside a bucket
        for user in frame["user_id"].unique().to_list():
            assert owners.setdefault(user, k) == k
    everything = buckets.scan().collect().sort(ROW)
    assert everything[ROW].to_list() == list(range(SYNTH.n_events))
    expected = scan_events(list_event_files(parts)).collect().sort(ROW)
    assert everything.equals(expected.select(everything.columns))


@pytest.mark.parametrize("passes", [1, 3, 4, 9])
def test_user_passes_over_buckets_split_the_users_exactly(
    parts: Path, tmp_path: Path, passes: int
) -> None:
    buckets = _bucketed(parts, tmp_path / "buckets", 4)
    seen: list[str] = []
    rows = 0
    for chosen in user_passes(buckets, passes):
        frame = chosen.collect()
        rows += len(frame)
        seen += frame["user_id"].unique().to_list()
    assert rows == SYNTH.n_events
    assert len(seen) == len(set(seen)) == SYNTH.n_users


def test_a_pass_reads_only_its_own_buckets(parts: Path, tmp_path: Path) -> None:
    buckets = _bucketed(parts, tmp_path / "buckets", 4)
    for path in buckets.files[3]:
        path.write_bytes(b"not parquet")  # only the last pass may touch bucket 3
    frames = user_passes(buckets, 4)
    for _ in range(3):
        assert len(next(frames).collect()) > 0
    with pytest.raises(pl.exceptions.PolarsError):
        next(frames).collect()


def test_sequences_from_buckets_equal_the_in_memory_sequences(parts: Path, tmp_path: Path) -> None:
    cfg = DataConfig(max_len=6)
    buckets = _bucketed(parts, tmp_path / "buckets", 3)
    full = prepare(_generated(), cfg)
    seqs = stream_sequences(buckets, full.vocab, tail_length(cfg), 2)
    expected = stream_sequences(
        scan_events(list_event_files(parts)), full.vocab, tail_length(cfg), 1
    )
    np.testing.assert_array_equal(seqs.offsets, expected.offsets)
    np.testing.assert_array_equal(seqs.values, expected.values)
    assert seqs.timestamps is not None and expected.timestamps is not None
    np.testing.assert_array_equal(seqs.timestamps, expected.timestamps)


def test_shards_split_the_users_and_each_rank_reads_only_its_buckets(
    parts: Path, tmp_path: Path
) -> None:
    cfg = DataConfig(max_len=6)
    full = prepare(_generated(), cfg)
    shared = tmp_path / "buckets"
    ranks = [stream_prepare(parts, cfg, shard=Shard(rank, 2), bucket_dir=shared) for rank in (0, 1)]
    # one bucketing for both ranks, and every rank indexes users and items alike
    assert (shared / "_done").exists()
    assert all(r.vocab == full.vocab for r in ranks)
    users = [set(r.split.test.users.tolist()) for r in ranks]
    assert users[0] and users[1] and not users[0] & users[1]
    assert users[0] | users[1] == set(full.split.test.users.tolist())
    # each rank's training windows are the full split's windows of its users
    window = cfg.max_len + 1
    for r in ranks:
        mine = r.split.train.lengths > 0
        assert torch.equal(
            r.split.train.padded(window)[mine], full.split.train.padded(window)[mine]
        )
    # rank 1 never touches rank 0's buckets
    buckets = read_user_buckets(shared, int((shared / "_done").read_text()))
    for k in Shard(0, 2).buckets(buckets.n_buckets):
        for path in buckets.files[k]:
            path.write_bytes(b"not parquet")
    again = stream_prepare(parts, cfg, shard=Shard(1, 2), bucket_dir=shared)
    np.testing.assert_array_equal(again.split.test.users, ranks[1].split.test.users)


def test_a_shard_outside_the_world_is_an_error() -> None:
    with pytest.raises(DataError, match="rank 2 is not in 0..1"):
        Shard(2, 2)


@pytest.mark.parametrize("passes", [1, 3])
def test_version_digest_over_buckets_equals_the_frame_digest(
    parts: Path, tmp_path: Path, passes: int
) -> None:
    from components.data.loaders import load_events
    from components.versioning.dvc_store import FileBatch, events_digest

    buckets = _bucketed(parts, tmp_path / "buckets", 4)
    batch = FileBatch(parts, passes, buckets=buckets if passes > 1 else None)
    assert batch.digest() == events_digest(load_events(parts, "parquet"))
