"""``train_model``: prepared data + configs -> a trained, evaluated :class:`ModelBundle`.

Neural models go through Lightning (seeding, early stopping on validation NDCG@K,
best-checkpoint restore, gradient clipping, accelerator/devices/strategy/precision from
:class:`TrainConfig`); models with ``trainable = False`` are fit by ``fit_data`` alone.
Both end the same way: full-ranking evaluation on the validation and test sets and the
bundle saved under ``run_dir/model``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from components.data.prepare import PreparedData
from components.data.splits import EvalSet
from components.errors import ConfigError, TrainingError
from components.evaluation.config import EvalConfig
from components.evaluation.metrics import evaluate
from components.faults import armed, pause_point
from components.features.item_content import ItemContent
from components.models.bundle import ModelBundle
from components.models.config import ModelConfig
from components.models.zoo import get_model_class, validate_params
from components.training.config import TrainConfig, resolved_precision, validation_interval
from components.training.datamodules import (
    RecDataModule,
    prefix_cost,
    resolved_samples,
    training_kind,
)
from components.training.module import RecommenderModule
from components.training.progress import EpochProgress
from components.training.shards import (
    gathered,
    require_rank_local_state,
    summed,
    whole_summary,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced (the bundle is also saved under ``run_dir/model``)."""

    bundle: ModelBundle
    metrics_valid: dict[str, float]
    metrics_test: dict[str, float]
    per_user_test: dict[str, np.ndarray]
    #: the evaluated test set ``per_user_test`` is aligned with (sharded: every rank's users)
    test_set: EvalSet
    #: the split's summary (sharded: counted over every rank's users)
    split_summary: dict[str, int | str]
    epochs: int
    train_seconds: float
    samples_per_second: float
    best_checkpoint: Path | None
    #: one entry per validation: epoch, step, train_loss, ndcg@K, hr@K, lr, elapsed_s, eta_s
    history: list[dict[str, float]] = field(default_factory=list)
    bundle_dir: Path | None = None
    exclude_seen: bool = False
    targets_per_second: float = 0.0  # predicted positions/s (causal models predict every position)


@dataclass
class _FitOutcome:
    epochs: int = 0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    targets_per_second: float = 0.0
    best_checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    is_global_zero: bool = True


def _eval_device(train_cfg: TrainConfig) -> torch.device:
    wants_gpu = train_cfg.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def _strategy(name: str) -> str | pl.strategies.Strategy:
    """Lightning's strategy for ``train.strategy``; plain ``ddp`` without buffer broadcasts.

    Every buffer in the zoo is fixed data (text vectors, id masks), never running statistics,
    so broadcasting them at each forward is pure cost. It also deadlocked validation: ranks
    get ``ceil`` or ``floor`` of the validation batches, and the rank with one more batch
    waited in the broadcast for a rank already gathering the epoch's metrics.
    """
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(broadcast_buffers=False)
    return name


def progress_bar_wanted(train_cfg: TrainConfig) -> bool:
    """A progress bar only where someone watches it (stdout is a terminal); log files and
    CI get :class:`EpochProgress`'s plain lines instead of bar fragments."""
    from components.quiet import stdout_is_terminal

    return train_cfg.progress_bar and stdout_is_terminal()


MID_EPOCH = "training.mid_epoch"


class _PauseMidEpoch(pl.Callback):
    """Fault injection: stop at ``training.mid_epoch`` (inside an epoch, after the first
    checkpoint was written) for the test to kill the process."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        saved = trainer.checkpoint_callback
        if batch_idx >= 1 and isinstance(saved, ModelCheckpoint) and saved.best_model_path:
            pause_point(MID_EPOCH)


def _trainer(
    train_cfg: TrainConfig, monitor: str, run_dir: Path, reload_every_epoch: bool = False
) -> tuple[pl.Trainer, ModelCheckpoint, EpochProgress]:
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
    )
    stopper = EarlyStopping(monitor=monitor, mode="max", patience=train_cfg.patience)
    bar = progress_bar_wanted(train_cfg)
    progress = EpochProgress(train_cfg.monitor_k, periodic=not bar)
    callbacks: list[pl.Callback] = [checkpoint, stopper, progress]
    if armed(MID_EPOCH):
        callbacks.append(_PauseMidEpoch())
    if bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    if train_cfg.lr_decay_factor is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = pl.Trainer(
        max_epochs=train_cfg.max_epochs,
        min_steps=train_cfg.min_steps or None,
        max_time=timedelta(minutes=train_cfg.max_time_minutes)
        if train_cfg.max_time_minutes
        else None,
        accelerator=train_cfg.accelerator,
        devices=train_cfg.devices,
        num_nodes=train_cfg.num_nodes,
        strategy=_strategy(train_cfg.strategy),
        precision=resolved_precision(train_cfg.precision, _eval_device(train_cfg).type == "cuda"),
        gradient_clip_val=train_cfg.grad_clip,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=str(run_dir), name="logs", version=""),
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=None
        if train_cfg.val_every_steps
        else train_cfg.check_val_every_n_epoch,
        val_check_interval=train_cfg.val_every_steps,
        deterministic=train_cfg.deterministic,
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
        log_every_n_steps=10,
        # a curriculum (train.positions_first_epochs) changes the examples between epochs
        reload_dataloaders_every_n_epochs=1 if reload_every_epoch else 0,
    )
    return trainer, checkpoint, progress


def _fit(
    bundle: ModelBundle,
    prepared: PreparedData,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    run_dir: Path,
) -> _FitOutcome:
    model = bundle.model
    split = prepared.split
    samples = resolved_samples(
        train_cfg.samples, model.input_kind, split.train, split.max_len, train_cfg.prefix_cost_limit
    )
    if samples != train_cfg.samples:
        log.info(
            "train.samples=%s: %s (prefixes cost %.1fx the tokens of positions here, limit %g)",
            train_cfg.samples,
            samples,
            prefix_cost(split.train, split.max_len),
            train_cfg.prefix_cost_limit,
        )
    first_epochs = train_cfg.positions_first_epochs if samples == "prefixes" else 0
    data = RecDataModule(
        training_kind(model.input_kind, samples),
        prepared.split.train,
        prepared.split.valid,
        prepared.split.max_len,
        train_cfg.batch_size,
        train_cfg.eval_batch_size,
        train_cfg.seed,
        train_cfg.num_workers,
        sharded=prepared.sharded,
        first_kind=model.input_kind,
        first_epochs=first_epochs,
    )
    if data.n_train_examples == 0:
        raise TrainingError(
            f"no training examples for {bundle.model_name}: every training sequence is too short"
        )
    steps_per_epoch = -(-data.n_train_examples // train_cfg.batch_size)
    train_cfg = train_cfg.model_copy(
        update={"val_every_steps": validation_interval(train_cfg, steps_per_epoch)}
    )
    module = RecommenderModule(model, train_cfg, exclude_seen=eval_cfg.exclude_seen)
    trainer, checkpoint, progress = _trainer(
        train_cfg, module.monitor, run_dir, reload_every_epoch=data.first_epochs > 0
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        trainer.fit(module, datamodule=data)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best is not None and best.exists():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        log.info(
            "restored best checkpoint %s (%s=%.4f)",
            best,
            module.monitor,
            float(checkpoint.best_model_score or 0),
        )
    seconds = module.train_seconds
    return _FitOutcome(
        epochs=trainer.current_epoch,
        train_seconds=seconds,
        samples_per_second=module.samples_seen / seconds if seconds > 0 else 0.0,
        targets_per_second=module.targets_seen / seconds if seconds > 0 else 0.0,
        best_checkpoint=best,
        history=progress.history,
        is_global_zero=trainer.is_global_zero,
    )


def save_whole(bundle: ModelBundle, directory: Path) -> None:
    """Save ``bundle`` into ``directory`` whole or not at all: written beside it, then
    renamed, so a kill or a full disk never leaves a half-written bundle there."""
    staging = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        bundle.save(staging)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def content_features(model_cfg: ModelConfig) -> set[str]:
    """The content features (``text``, ``category``) ``model.params.item_features`` asks for."""
    return set(model_cfg.params.get("item_features", ["id"])) & {"text", "category"}


def _content_params(
    params: dict[str, Any], content: ItemContent | None, wanted: set[str]
) -> dict[str, Any]:
    """``params`` with the content sizes filled in (unchanged for an id-only model)."""
    if not wanted:
        return params
    if content is None:
        raise ConfigError(
            f"model.params.item_features has {sorted(wanted)} but no item content was given "
            "(lifecycle.train reads it from the feature store's item_content view)",
            hint="give the data an item catalogue (data.items, a RecBole .item file, or the "
            "synthetic data) or drop text/category from model.params.item_features",
        )
    if "text" in wanted and content.text_dim == 0:
        raise ConfigError(
            "model.params.item_features has 'text' but the item content has no text vectors",
            hint="drop text from model.params.item_features or set features.text_encoder",
        )
    return {
        **params,
        "text_dim": content.text_dim if "text" in wanted else 0,
        "n_categories": content.n_categories,
        "category_slots": content.category_slots,
    }


def _event_params(params: dict[str, Any], prepared: PreparedData) -> dict[str, Any]:
    """``params`` with ``n_event_types`` from the data when the model reads event types;
    data without event types gets a one-line warning (the embedding then never fires)."""
    if not params.get("event_types"):
        return params
    n_types = prepared.vocab.n_event_types
    if prepared.sequences.events is None or n_types < 2:
        log.warning(
            "model.params.event_types is on but the data has %d event type(s): "
            "the event-type embedding carries no information",
            n_types,
        )
    return {**params, "n_event_types": n_types}


def build_bundle(
    prepared: PreparedData, model_cfg: ModelConfig, content: ItemContent | None = None
) -> ModelBundle:
    """An untrained bundle: the configured model with its data-dependent state fit.

    A model with content features (``item_features`` beyond ``id``) gets ``content`` (text
    vectors and category ids aligned with ``prepared.vocab``, read from Feast by
    :mod:`components.lifecycle.train`) as buffers saved with the bundle, and keeps id
    embeddings only for items with training events."""
    split = prepared.split
    cls = get_model_class(model_cfg.name)
    wanted = content_features(model_cfg)
    raw = _content_params(dict(model_cfg.params), content, wanted)
    if not wanted:
        content = None
    params = validate_params(model_cfg.name, _event_params(raw, prepared))
    model = cls(params, split.n_items, prepared.vocab.n_users, split.max_len)
    model.fit_data(split.train)
    popularity = np.bincount(split.train.values, minlength=split.n_items + 1).astype(np.float64)
    if content is not None and model.item_input is not None:
        model.item_input.set_content(content.text, content.categories, popularity > 0)
    return ModelBundle(
        model,
        prepared.vocab,
        model_cfg.name,
        params.model_dump(mode="json"),
        split.max_len,
        popularity,
    )


def train_model(
    prepared: PreparedData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    run_dir: Path,
    content: ItemContent | None = None,
) -> TrainResult:
    """Train ``model_cfg`` on ``prepared``'s split, restore the best epoch, evaluate, save.
    ``content``: the vocabulary's item features for a model that uses them.

    With ``prepared.sharded`` (one data-parallel rank's users, under ``strategy: ddp``)
    each rank trains on its own users; the metrics and ``per_user_test`` then cover every
    rank's evaluation users (gathered in rank order) and the bundle's popularity sums all
    ranks' training counts.

    Raises :class:`ConfigError` for unknown models/hyperparameters (or, sharded, for a
    model that builds state from the whole training data) and :class:`TrainingError`
    when there is nothing to train on.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(train_cfg.seed, workers=True, verbose=False)
    if train_cfg.num_threads is not None:
        torch.set_num_threads(train_cfg.num_threads)
    started = time.perf_counter()
    if prepared.sharded:
        require_rank_local_state(model_cfg)
    bundle = build_bundle(prepared, model_cfg, content)
    if bundle.model.trainable:
        outcome = _fit(bundle, prepared, train_cfg, eval_cfg, run_dir)
    else:
        seconds = time.perf_counter() - started
        n = int(prepared.split.train.lengths.sum())
        outcome = _FitOutcome(
            epochs=0, train_seconds=seconds, samples_per_second=n / max(seconds, 1e-9)
        )
    bundle.model.to(_eval_device(train_cfg)).eval()
    eval_sets = (prepared.split.valid, prepared.split.test)
    split_summary = prepared.split.summary()
    if prepared.sharded:  # every rank evaluates (and rank 0 saves) what all ranks hold
        eval_sets = (gathered(prepared.split.valid), gathered(prepared.split.test))
        bundle.item_popularity = summed(bundle.item_popularity)
        split_summary = whole_summary(prepared)
    valid, test = (
        evaluate(
            bundle,
            split,
            ks=eval_cfg.ks,
            exclude_seen=eval_cfg.exclude_seen,
            batch_size=eval_cfg.batch_size,
        )
        for split in eval_sets
    )
    bundle_dir = run_dir / "model"
    if outcome.is_global_zero:  # under DDP only rank 0 writes the bundle
        save_whole(bundle, bundle_dir)
    log.info(
        "%s: valid ndcg@10=%.4f test ndcg@10=%.4f after %d epochs (%.1fs)",
        model_cfg.name,
        valid.summary.get("ndcg@10", float("nan")),
        test.summary.get("ndcg@10", float("nan")),
        outcome.epochs,
        outcome.train_seconds,
    )
    return TrainResult(
        bundle=bundle,
        metrics_valid=valid.summary,
        metrics_test=test.summary,
        per_user_test=test.per_user,
        test_set=eval_sets[1],
        split_summary=split_summary,
        epochs=outcome.epochs,
        train_seconds=outcome.train_seconds,
        samples_per_second=outcome.samples_per_second,
        best_checkpoint=outcome.best_checkpoint,
        history=outcome.history,
        bundle_dir=bundle_dir,
        exclude_seen=eval_cfg.exclude_seen,
        targets_per_second=outcome.targets_per_second,
    )
