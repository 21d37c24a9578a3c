"""Item embeddings from the training data's item transitions: a warm start for the id table.

``item_init: transitions`` (a parameter of every model with an :class:`ItemInput`) replaces
the N(0, 0.02) initial id embeddings by a spectral embedding of the item-transition graph
before the first gradient step: ``A = C + C^T``, ``C[i, j]`` the number of times item ``j``
directly follows item ``i`` in a training sequence, normalised ``D^-1/2 A D^-1/2`` (``D``
the degrees) and truncated to its top ``dim`` singular vectors ``U S^1/2``, rescaled to the
normal initialisation's standard deviation. Items that follow or precede each other then
start with similar embeddings, so a tied-embedding causal model scores "what usually comes
next" from its first step instead of learning it from random vectors. Items without any
transition keep their random rows. Costs seconds (a randomized truncated SVD of a sparse matrix); the result
depends only on the training data and the seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from components.data.sequences import Sequences

if TYPE_CHECKING:  # scipy is imported where a warm start runs: the zoo imports this module,
    import scipy.sparse as sp  # and a serving worker the zoo (test_worker_imports.py)


def transition_counts(train: Sequences, n_items: int) -> sp.csr_matrix:
    """``[n_items + 1, n_items + 1]`` symmetric counts of consecutive item pairs."""
    import scipy.sparse as sp

    values = np.asarray(train.values, dtype=np.int64)
    follows = np.ones(len(values), dtype=bool)
    follows[np.asarray(train.offsets[:-1], dtype=np.int64)] = False  # a sequence's first item
    later = np.flatnonzero(follows)
    earlier = later - 1
    rows, cols = values[earlier], values[later]
    ones = np.ones(len(rows), dtype=np.float64)
    size = n_items + 1
    counts = sp.coo_matrix((ones, (rows, cols)), shape=(size, size)).tocsr()
    return (counts + counts.T).tocsr()


def randomized_svd(
    matrix: sp.csr_matrix, rank: int, seed: int, oversample: int = 10, power_iterations: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """``(U [n, rank], S [rank])`` of a symmetric sparse ``matrix`` by a randomized range
    finder with power iterations (Halko et al. 2011): a handful of sparse products instead
    of ARPACK's many (on Beauty's 12k items ~14 CPU s for ARPACK, well under one here)."""
    width = min(rank + oversample, matrix.shape[0])
    probe = np.random.default_rng(seed).standard_normal((matrix.shape[0], width))
    basis, _ = np.linalg.qr(matrix @ probe)
    for _ in range(power_iterations):
        basis, _ = np.linalg.qr(matrix @ basis)
    small = basis.T @ (matrix @ basis)  # [width, width], symmetric
    left, singular, _ = np.linalg.svd(small)
    return (basis @ left)[:, :rank], singular[:rank]


def spectral_item_embeddings(
    train: Sequences, n_items: int, dim: int, std: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings [n_items + 1, dim], has_transitions [n_items + 1])``: the normalised
    transition graph's top-``dim`` singular vectors scaled by the square roots of their
    singular values, rescaled to standard deviation ``std`` over the items that have
    transitions (their rows; other rows are 0 and flagged False)."""
    import scipy.sparse as sp

    graph = transition_counts(train, n_items)
    degree = np.asarray(graph.sum(axis=1)).ravel()
    connected = degree > 0
    size = n_items + 1
    out = np.zeros((size, dim), dtype=np.float32)
    rank = min(dim, int(connected.sum()) - 1)
    if rank < 1:
        return out, connected
    scale = sp.diags(np.where(connected, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0))
    normalised = (scale @ graph @ scale).tocsr()
    vectors, singular = randomized_svd(normalised, rank, seed)
    embedded = vectors * np.sqrt(np.abs(singular))[None, :]
    spread = float(embedded[connected].std()) or 1.0
    out[:, :rank] = embedded * (std / spread)
    out[~connected] = 0.0
    return out, connected


def warm_start_ids(weight: torch.Tensor, train: Sequences, n_items: int, seed: int = 0) -> int:
    """Overwrite the rows of the id table ``weight [>= n_items + 1, D]`` (row 0 padding)
    of items with transitions by :func:`spectral_item_embeddings` at the table's current
    standard deviation; returns how many rows were replaced."""
    with torch.no_grad():
        std = float(weight[1 : n_items + 1].std()) if n_items > 1 else 0.02
        table, connected = spectral_item_embeddings(train, n_items, weight.shape[1], std, seed)
        rows = torch.from_numpy(np.flatnonzero(connected))
        weight[rows] = torch.from_numpy(table[connected]).to(weight.dtype)
        weight[0].zero_()
    return len(rows)
