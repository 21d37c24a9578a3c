"""BSARec's causal filter and LRURec's scan against plain reference computations."""

from __future__ import annotations

import pytest
import torch

from components.errors import TrainingError
from components.models.bsarec import (
    BSARec,
    BSARecParams,
    causal_toeplitz,
    low_pass_kernel,
    window_matrix,
)
from components.models.lrurec import LRURec, LRURecParams, parallel_scan, sequential_scan


def test_causal_low_pass_equals_the_fft_filter_at_the_last_position() -> None:
    torch.manual_seed(0)
    window, c = 50, 5
    x = torch.randn(3, window, 8)
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
    spectrum[:, c // 2 + 1 :] = 0  # the reference keeps the c // 2 + 1 lowest frequencies
    reference = torch.fft.irfft(spectrum, n=window, dim=1, norm="ortho")[:, -1]
    filtered = causal_toeplitz(low_pass_kernel(window, c)) @ x
    assert torch.allclose(filtered[:, -1], reference, atol=1e-5)


def test_causal_low_pass_on_a_prefix_equals_the_fft_filter_of_that_zero_padded_prefix() -> None:
    torch.manual_seed(1)
    window, c, t = 20, 5, 11
    x = torch.randn(1, window, 4)
    padded = torch.zeros_like(x)
    padded[:, window - t - 1 :] = x[:, : t + 1]  # the prefix ending at t, left-padded
    spectrum = torch.fft.rfft(padded, dim=1, norm="ortho")
    spectrum[:, c // 2 + 1 :] = 0
    reference = torch.fft.irfft(spectrum, n=window, dim=1, norm="ortho")[:, -1]
    filtered = causal_toeplitz(low_pass_kernel(window, c)) @ x
    assert torch.allclose(filtered[:, t], reference, atol=1e-5)


def test_window_filter_is_the_reference_fft_low_pass_of_the_whole_window() -> None:
    torch.manual_seed(2)
    window, c = 50, 5
    x = torch.randn(2, window, 8)
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
    spectrum[:, c // 2 + 1 :] = 0
    reference = torch.fft.irfft(spectrum, n=window, dim=1, norm="ortho")
    assert torch.allclose(window_matrix(window, c) @ x, reference, atol=1e-5)
    # every position reads the window's future (it is not causal): only the last is trained
    assert window_matrix(window, c)[0, 1:].abs().max() > 1e-3


def test_window_bsarec_scores_a_history_the_same_however_it_was_padded() -> None:
    torch.manual_seed(0)
    params = BSARecParams(hidden_size=16, filter="window", positions_from="last")
    model = BSARec(params, n_items=30, n_users=5, max_len=12).eval()
    short = torch.tensor([[0, 4, 5, 6], [1, 2, 3, 4]])
    padded = torch.nn.functional.pad(short, (8, 0))
    with torch.no_grad():
        assert torch.allclose(model.score_all(short), model.score_all(padded), atol=1e-5)
        # the filter reads the padding: the same items padded less would score differently
        causal = BSARec(params.model_copy(update={"filter": "causal"}), 30, 5, 12).eval()
        causal.load_state_dict(model.state_dict())
        assert not torch.allclose(model.score_all(short), causal.score_all(short), atol=1e-3)


def test_window_bsarec_trains_only_on_last_positions() -> None:
    params = BSARecParams(hidden_size=16, filter="window", positions_from="last")
    model = BSARec(params, n_items=30, n_users=5, max_len=12)
    inputs = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    pairs = model.training_pairs({"inputs": inputs, "targets": torch.tensor([5, 6])})
    assert pairs.hidden.shape == (2, 16) and pairs.targets.tolist() == [5, 6]
    with pytest.raises(TrainingError, match="train.samples=prefixes"):
        model.training_pairs({"inputs": inputs, "targets": inputs})


def test_bsarec_filter_ignores_the_attention_branch_when_alpha_is_one() -> None:
    torch.manual_seed(0)
    params = BSARecParams(hidden_size=16, num_layers=1, dropout=0.0, attn_dropout=0.0, alpha=1.0)
    model = BSARec(params, n_items=30, n_users=5, max_len=12).eval()
    histories = torch.randint(1, 31, (4, 12))
    block = model.encoder.blocks[0]
    with torch.no_grad():
        block.qkv.weight.mul_(5.0)  # changing attention must not change the output
        before = model.hidden_states(histories)
        block.qkv.weight.mul_(0.0)
        after = model.hidden_states(histories)
    assert torch.allclose(before, after, atol=1e-6)


def test_parallel_scan_equals_the_recurrence() -> None:
    torch.manual_seed(0)
    u_re, u_im = torch.randn(3, 37, 6), torch.randn(3, 37, 6)
    radius, phase = 0.5 + 0.49 * torch.rand(6), 6.28 * torch.rand(6)
    lam = (radius * torch.cos(phase), radius * torch.sin(phase))
    fast = parallel_scan(u_re, u_im, *lam)
    slow = sequential_scan(u_re, u_im, *lam)
    assert torch.allclose(fast[0], slow[0], atol=1e-5)
    assert torch.allclose(fast[1], slow[1], atol=1e-5)


def test_lrurec_recurrent_inference_equals_the_parallel_scan() -> None:
    torch.manual_seed(0)
    params = LRURecParams(hidden_size=16, dropout=0.0, recurrent_dropout=0.0)
    model = LRURec(params, n_items=40, n_users=5, max_len=20).eval()
    histories = torch.randint(1, 41, (5, 20))
    histories[:2, :7] = 0  # left padding
    with torch.no_grad():
        parallel = model.hidden_states(histories)
        recurrent = model.hidden_states(histories, recurrent=True)
    assert torch.allclose(parallel, recurrent, atol=1e-5)
