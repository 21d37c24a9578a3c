"""A realistic synthetic event generator for demos, tests and scale runs.

What makes it realistic enough to be useful:
- Zipf-like item popularity (exponent ``zipf_a``) inside latent taste clusters;
- sequential (Markov) structure: with probability ``markov_strength`` the next item is the
  successor of the current one in its cluster's chain, so a sequence model beats popularity;
- gradual drift: at each step a user moves to another cluster with probability ``drift``;
- sessions with plausible timestamps (short gaps inside, about a day between sessions);
- event types with a funnel (view > click > cart > purchase) and an item ``category`` column;
  by default the types are drawn independently of the items; with ``funnel: true`` they
  carry signal (:func:`purchase_funnel`: purchases are of recently carted items).

Deterministic by seed. Users are generated in chunks (:func:`iter_event_chunks`), so 10M+
events can be written to Parquet in bounded memory (:func:`write_events_parquet`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.config import SyntheticConfig
from components.data.schema import EVENT, ITEM, STRING_DTYPE, TIME, USER, VALUE

EVENT_FUNNEL = (("view", 0.70), ("click", 0.20), ("cart", 0.07), ("purchase", 0.03))
SESSION_BREAK_P = 0.12
IN_SESSION_GAP_S = 90.0
BETWEEN_SESSION_GAP_S = 86_400.0
GLOBAL_NOISE_P = 0.1
# the purchase funnel (SyntheticConfig.funnel): share of events that are carts, chance of a
# purchase after an event, and how many recent events the purchased cart item comes from
FUNNEL_CART_P = 0.2
FUNNEL_PURCHASE_P = 0.15
FUNNEL_WINDOW = 20
AUTO_START_DAYS_AGO = 120


class _World:
    """Items, clusters and chains shared by every user (depends only on the config)."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        n, c = cfg.n_items, min(cfg.n_clusters, cfg.n_items)
        self.n_clusters = c
        self.item_cluster = rng.integers(0, c, size=n)
        self.item_cluster[:c] = np.arange(c)  # every cluster has at least one item
        popularity = 1.0 / np.arange(1, n + 1) ** cfg.zipf_a
        self.popularity = rng.permutation(popularity)
        self.popularity /= self.popularity.sum()
        # items grouped by cluster; per-cluster CDF shifted by the cluster id so one
        # searchsorted over all clusters samples from each user's own cluster
        order = np.lexsort((-self.popularity, self.item_cluster))
        self.cluster_items = order
        counts = np.bincount(self.item_cluster, minlength=c)
        self.cluster_offsets = np.concatenate([[0], np.cumsum(counts)])
        probs = self.popularity[order]
        cum = np.cumsum(probs)
        starts = np.repeat(self.cluster_offsets[:-1], counts)
        before = np.concatenate([[0.0], cum])[starts]
        totals = np.repeat(np.add.reduceat(probs, self.cluster_offsets[:-1]), counts)
        self.shifted_cdf = self.item_cluster[order] + (cum - before) / totals
        self.shifted_cdf[self.cluster_offsets[1:] - 1] = np.arange(c) + 1.0
        # chain successor: a random cyclic order inside each cluster
        self.successor = np.empty(n, dtype=np.int64)
        for k in range(c):
            members = rng.permutation(np.flatnonzero(self.item_cluster == k))
            self.successor[members] = np.roll(members, -1)
        self.global_cdf = np.cumsum(self.popularity)
        self.global_cdf[-1] = 1.0

    def sample_in_cluster(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        keys = clusters + rng.random(len(clusters)) * (1 - 1e-12)
        pos = np.searchsorted(self.shifted_cdf, keys, side="right")
        return self.cluster_items[np.minimum(pos, len(self.cluster_items) - 1)]

    def sample_global(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return np.minimum(
            np.searchsorted(self.global_cdf, rng.random(size)), len(self.global_cdf) - 1
        )


def sequence_lengths(cfg: SyntheticConfig) -> np.ndarray:
    """Per-user event counts summing exactly to ``n_events`` (at least 3 where possible)."""
    rng = np.random.default_rng(cfg.seed + 1)
    floor = 3 if cfg.n_events >= 3 * cfg.n_users else 1
    floor = floor if cfg.n_events >= floor * cfg.n_users else 0
    weights = rng.lognormal(0.0, 0.8, size=cfg.n_users)
    spare = cfg.n_events - floor * cfg.n_users
    extra = np.floor(spare * weights / weights.sum()).astype(np.int64)
    extra[: spare - int(extra.sum())] += 1
    return floor + extra


def synthetic_start(start: str) -> pd.Timestamp:
    """The first timestamp of a batch: ``start`` (UTC), or 120 days before today for ``auto``
    (users start within 30 days of it; sessions a day apart keep all but extreme users'
    histories in the past)."""
    if start == "auto":
        return pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=AUTO_START_DAYS_AGO)
    stamp = pd.Timestamp(start)
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def _chunk_events(
    cfg: SyntheticConfig,
    world: _World,
    users: np.ndarray,
    lengths: np.ndarray,
    chunk_no: int,
    batch: int,
) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, 2, chunk_no, batch])
    n_users = len(users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    items = np.empty(total, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first: active users are a prefix
    sorted_len = lengths[order]
    clusters = rng.integers(0, world.n_clusters, size=n_users)[order]
    current = world.sample_in_cluster(clusters, rng)
    for step in range(int(sorted_len.max(initial=0))):
        active = int(np.searchsorted(-sorted_len, -step, side="left"))
        if step > 0:
            cur = current[:active]
            cl = clusters[:active]
            moved = rng.random(active) < cfg.drift
            cl[moved] = rng.integers(0, world.n_clusters, size=int(moved.sum()))
            follow = rng.random(active) < cfg.markov_strength
            nxt = world.sample_in_cluster(cl, rng)
            nxt[follow] = world.successor[cur[follow]]
            noise = rng.random(active) < GLOBAL_NOISE_P
            nxt[noise] = world.sample_global(int(noise.sum()), rng)
            current[:active] = nxt
        items[offsets[order[:active]] + step] = current[:active]
    # timestamps: per-user start in the first 30 days, session-shaped gaps after
    breaks = rng.random(total) < SESSION_BREAK_P
    gaps = np.where(
        breaks,
        rng.exponential(BETWEEN_SESSION_GAP_S, total),
        rng.exponential(IN_SESSION_GAP_S, total),
    )
    gaps[offsets[:-1][lengths > 0]] = 0.0
    cum = np.cumsum(gaps)
    user_of_event = np.repeat(np.arange(n_users), lengths)
    cum -= np.concatenate([[0.0], cum])[offsets[:-1]][user_of_event]
    start = synthetic_start(cfg.start)
    user_start = rng.uniform(0, 30 * 86_400.0, size=n_users)
    seconds = user_start[user_of_event] + cum
    names = np.array([name for name, _ in EVENT_FUNNEL])
    probs = np.array([p for _, p in EVENT_FUNNEL])
    event_types = names[np.searchsorted(np.cumsum(probs), rng.random(total) * probs.sum())]
    if cfg.funnel:
        user_of_event, items, seconds, event_types = purchase_funnel(
            user_of_event, items, np.round(seconds, 3), rng
        )
    return pd.DataFrame(
        {
            USER: pd.array(np.char.add("u", users[user_of_event].astype(str)), dtype=STRING_DTYPE),
            ITEM: pd.array(np.char.add("i", items.astype(str)), dtype=STRING_DTYPE),
            TIME: start + pd.to_timedelta(np.round(seconds, 3), unit="s"),
            EVENT: pd.array(event_types, dtype=STRING_DTYPE),
            VALUE: np.nan,
            "category": pd.array(
                np.char.add("c", world.item_cluster[items].astype(str)), dtype=STRING_DTYPE
            ),
        }
    )


def purchase_funnel(
    user_of_event: np.ndarray, items: np.ndarray, seconds: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Event types that carry signal (events grouped by user, in time order).

    Each event is a ``cart`` (``FUNNEL_CART_P``) or a ``view``. After an event, with chance
    ``FUNNEL_PURCHASE_P``, the user buys one of the items carted among their last
    ``FUNNEL_WINDOW`` events (uniformly; nothing when none was carted): a ``purchase``
    event inserted halfway to the next event. So the next purchase is predictable from
    which recent events were carts, which an item-only history does not say. Returns
    ``(user_of_event, items, seconds, event_types)`` with the purchases inserted.
    """
    n = len(items)
    is_cart = rng.random(n) < FUNNEL_CART_P
    first = np.flatnonzero(np.r_[True, user_of_event[1:] != user_of_event[:-1]])
    user_start = first[np.searchsorted(first, np.arange(n), side="right") - 1]
    carts_through = np.cumsum(is_cart)  # carts at positions <= i
    window_start = np.maximum(np.arange(n) - FUNNEL_WINDOW + 1, user_start)
    carts_before: np.ndarray = np.where(window_start > 0, carts_through[window_start - 1], 0)
    in_window: np.ndarray = carts_through - carts_before
    buys = np.flatnonzero((rng.random(n) < FUNNEL_PURCHASE_P) & (in_window > 0))
    pick = carts_before[buys] + (rng.random(len(buys)) * in_window[buys]).astype(np.int64)
    bought = items[np.flatnonzero(is_cart)[pick]]
    same_user_next = np.r_[user_of_event[1:] == user_of_event[:-1], False]
    gap = np.where(same_user_next, np.r_[np.diff(seconds), 0.0], 2.0)
    order = np.argsort(np.r_[np.arange(n), buys + 0.5], kind="stable")
    return (
        np.r_[user_of_event, user_of_event[buys]][order],
        np.r_[items, bought][order],
        np.r_[seconds, seconds[buys] + gap[buys] / 2][order],
        np.r_[np.where(is_cart, "cart", "view"), np.full(len(buys), "purchase")][order],
    )


def iter_event_chunks(
    cfg: SyntheticConfig, events_per_chunk: int = 1_000_000, batch: int = 0
) -> Iterator[pd.DataFrame]:
    """Yield contract-shaped event frames, a block of users at a time, in user order.

    ``batch`` > 0 gives another batch of the same world (same users, items, clusters and
    chains; new behaviour), which is what a scheduled retrain sees arrive. Timestamps start
    at ``cfg.start``; ``"auto"`` means 120 days before today (UTC midnight), so every batch
    is recent and passes the contract's time checks.
    """
    world = _World(cfg)
    lengths = sequence_lengths(cfg)
    bounds = np.searchsorted(
        np.cumsum(lengths), np.arange(events_per_chunk, int(lengths.sum()), events_per_chunk)
    )
    edges = np.unique(np.concatenate([[0], bounds + 1, [cfg.n_users]]).clip(0, cfg.n_users))
    for chunk_no, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        users = np.arange(lo, hi)
        yield _chunk_events(cfg, world, users, lengths[lo:hi], chunk_no, batch)


def generate_events(cfg: SyntheticConfig, batch: int = 0) -> pd.DataFrame:
    """All events of ``cfg`` (period ``batch``) as one frame in the event contract (plus ``category``)."""
    return pd.concat(list(iter_event_chunks(cfg, batch=batch)), ignore_index=True)


def write_events_parquet(
    cfg: SyntheticConfig, path: str | Path, events_per_chunk: int = 1_000_000, batch: int = 0
) -> Path:
    """Stream the generated events into one Parquet file; memory stays O(chunk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    try:
        for frame in iter_event_chunks(cfg, events_per_chunk, batch):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path


# Words of each taste cluster's theme: an item's title draws from its cluster's theme, so
# text alone says which cluster (and so which neighbours) an item belongs to.
THEMES: tuple[tuple[str, ...], ...] = (
    ("espresso", "coffee", "roast", "barista", "latte", "bean"),
    ("hiking", "trail", "mountain", "tent", "backpack", "camping"),
    ("lipstick", "mascara", "makeup", "blush", "eyeliner", "cosmetic"),
    ("guitar", "amplifier", "drum", "piano", "music", "chord"),
    ("football", "soccer", "goal", "stadium", "jersey", "league"),
    ("novel", "mystery", "detective", "thriller", "crime", "book"),
    ("puppy", "dog", "leash", "kennel", "pet", "collar"),
    ("garden", "seed", "tomato", "soil", "flower", "plant"),
    ("laptop", "keyboard", "monitor", "computer", "mouse", "software"),
    ("yoga", "fitness", "workout", "gym", "dumbbell", "exercise"),
    ("baby", "diaper", "stroller", "toddler", "crib", "infant"),
    ("kitchen", "knife", "pan", "cooking", "recipe", "chef"),
    ("camera", "lens", "photo", "tripod", "flash", "photography"),
    ("skincare", "moisturizer", "serum", "cleanser", "lotion", "sunscreen"),
    ("bicycle", "cycling", "helmet", "pedal", "bike", "wheel"),
    ("tea", "herbal", "matcha", "teapot", "chamomile", "oolong"),
)
ADJECTIVES = ("classic", "premium", "compact", "deluxe", "everyday", "essential", "pro", "mini")


def synthetic_catalogue(cfg: SyntheticConfig) -> pd.DataFrame:
    """Catalogue of the synthetic world (see :mod:`components.data.catalogue`): every item
    gets a short title from its taste cluster's theme and the category ``c<cluster>``.

    Clusters beyond the number of themes reuse a theme with a numbered series, so titles
    stay cluster-specific. Deterministic by seed.
    """
    from components.data.catalogue import make_catalogue

    world = _World(cfg)
    rng = np.random.default_rng([cfg.seed, 5])
    theme = world.item_cluster % len(THEMES)
    words = np.array(THEMES, dtype=object)
    picks = rng.integers(0, words.shape[1], size=(cfg.n_items, 2))
    first, second = words[theme, picks[:, 0]], words[theme, picks[:, 1]]
    adjective = np.array(ADJECTIVES, dtype=object)[rng.integers(0, len(ADJECTIVES), cfg.n_items)]
    series = world.item_cluster // len(THEMES)
    idx = np.arange(cfg.n_items)
    titles = [
        f"{a} {w1} {w2}" + (f" series {s}" if s else "") + f" no. {i}"
        for a, w1, w2, s, i in zip(adjective, first, second, series, idx, strict=True)
    ]
    return make_catalogue(
        np.char.add("i", idx.astype(str)), titles, np.char.add("c", world.item_cluster.astype(str))
    )
