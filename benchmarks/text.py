"""``recops bench text``: the language-model item encoder's speed and the memory of vectors.

1. Encode ``items`` synthetic titles with an empty cache (items/s, model load included and
   also reported apart), then again (everything from the text-hash cache).
2. Memory: a ``vector_items`` catalogue's vectors through the whole path (cache -> the
   result array -> a model's ItemInput buffer) with peak RSS sampled. Encoding a million
   titles would take hours on a CPU, so this part fills the cache with random unit vectors
   under the real text keys first: it measures holding, not encoding.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy import PeakRSS, anonymous_rss_mb


def _titles(n_items: int, seed: int = 7) -> list[str]:
    from components.data.config import SyntheticConfig
    from components.data.synthetic import synthetic_catalogue

    cfg = SyntheticConfig(n_items=n_items, n_users=1, n_events=1, n_clusters=16, seed=seed)
    return synthetic_catalogue(cfg)["text"].astype(str).tolist()


def encode_speed(n_items: int, batch_size: int, cache_root: Path) -> dict[str, Any]:
    """Cold and cached encoding of ``n_items`` titles."""
    from components.features.text_encoder import encode_texts, load_encoder

    titles = _titles(n_items)
    started = time.perf_counter()
    load_encoder("minilm")
    load_s = time.perf_counter() - started
    _, cold = encode_texts(titles, "minilm", cache_root, batch_size)
    _, cached = encode_texts(titles, "minilm", cache_root, batch_size)
    return {
        "items": n_items,
        "batch_size": batch_size,
        "model_load_s": load_s,
        "cold_s": cold.seconds,
        "cold_items_per_s": n_items / cold.seconds,
        "cached_s": cached.seconds,
        "cached_encoded": cached.encoded,
    }


def _fill_cache(titles: list[str], cache_root: Path, dim: int) -> None:
    from components.features.text_encoder import ENCODE_CHUNK, VectorCache, text_keys

    cache = VectorCache(cache_root / "minilm")
    rng = np.random.default_rng(0)
    step = ENCODE_CHUNK * 16
    for start in range(0, len(titles), step):
        keys = text_keys("minilm", titles[start : start + step])
        vectors = rng.standard_normal((len(keys), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cache.write(keys, vectors)


def vector_memory(n_items: int, dim: int, cache_root: Path) -> dict[str, Any]:
    """Peak RSS while ``n_items`` cached vectors become a model's ItemInput buffer."""
    import psutil
    import torch

    from components.features.text_encoder import encode_texts
    from components.models.layers import ItemInputParams

    titles = _titles(n_items)
    _fill_cache(titles, cache_root, dim)
    base_mb = psutil.Process().memory_info().rss / 2**20
    base_anon_mb = anonymous_rss_mb()
    with PeakRSS(0.05) as rss:
        started = time.perf_counter()
        vectors, stats = encode_texts(titles, "minilm", cache_root)
        params = ItemInputParams(item_features=["text"], text_dim=dim)
        layer = params.item_input(n_items, 64)
        layer.set_content(vectors, None, None)
        shared = layer.text.data_ptr() == torch.from_numpy(vectors).data_ptr()
        seconds = time.perf_counter() - started
    vectors_mb = vectors.nbytes / 2**20
    return {
        "items": n_items,
        "dim": dim,
        "vectors_mb": vectors_mb,
        "rss_before_mb": base_mb,
        "peak_rss_mb": rss.peak_mb,
        "peak_over_before_mb": rss.peak_mb - base_mb,
        "copies_held": (rss.peak_mb - base_mb) / vectors_mb,
        # without the file-backed pages of the memory-mapped cache shards being copied from
        "peak_anon_over_before_mb": rss.peak_anon_mb - base_anon_mb,
        "anon_copies_held": (rss.peak_anon_mb - base_anon_mb) / vectors_mb,
        "buffer_shares_array": shared,
        "from_cache_s": seconds,
        "encoded": stats.encoded,
    }


def run_text_benchmark(
    items: int, batch_size: int, vector_items: int, json_out: Path | None
) -> dict[str, Any]:
    """Both parts; prints a table, writes JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp:
        speed = encode_speed(items, batch_size, Path(tmp) / "speed") if items else None
        memory = vector_memory(vector_items, 384, Path(tmp) / "memory") if vector_items else None
    result = {"speed": speed, "memory": memory, "torch_threads": _threads()}
    print(format_text_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2))
        print(f"wrote {json_out}")
    return result


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def format_text_table(result: dict[str, Any]) -> str:
    lines = ["| measure | value |", "|---|---|"]
    speed, memory = result.get("speed"), result.get("memory")
    if speed:
        lines += [
            f"| titles encoded (empty cache) | {speed['items']:,} |",
            f"| model load | {speed['model_load_s']:.1f} s |",
            f"| encode, empty cache (load included) | {speed['cold_s']:.1f} s "
            f"({speed['cold_items_per_s']:.0f} items/s, batch {speed['batch_size']}) |",
            f"| re-run, all cached | {speed['cached_s']:.2f} s "
            f"({speed['cached_encoded']} encoded) |",
        ]
    if memory:
        lines += [
            f"| vectors of {memory['items']:,} items | {memory['vectors_mb']:.0f} MB "
            f"(float32 x {memory['dim']}) |",
            f"| peak RSS over the start, cache -> ItemInput buffer | "
            f"{memory['peak_over_before_mb']:.0f} MB ({memory['copies_held']:.2f} x the vectors) |",
            f"| peak anonymous RSS over the start (mapped cache pages excluded) | "
            f"{memory.get('peak_anon_over_before_mb', 0):.0f} MB "
            f"({memory.get('anon_copies_held', 0):.2f} x the vectors) |",
            f"| model buffer shares the array | {memory['buffer_shares_array']} |",
            f"| load from cache | {memory['from_cache_s']:.1f} s |",
        ]
    lines.append(f"torch threads: {result.get('torch_threads')}")
    return "\n".join(lines)
