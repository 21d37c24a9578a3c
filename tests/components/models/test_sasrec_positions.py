"""SASRec's training positions match inference: step t of a sequence == scoring its prefix."""

from __future__ import annotations

import pytest
import torch

from components.models.sasrec import SASRec, SASRecParams


@pytest.mark.parametrize("norm_first", [False, True])
def test_every_training_position_equals_inference_on_that_prefix(norm_first: bool) -> None:
    torch.manual_seed(0)
    params = SASRecParams(hidden_size=16, num_heads=2, num_layers=2, norm_first=norm_first)
    model = SASRec(params, n_items=30, n_users=1, max_len=8).eval()
    sequence = torch.tensor([[0, 0, 5, 9, 2, 17, 4, 11]])  # left padded, as training batches are
    with torch.no_grad():
        hidden = model.hidden_states(sequence)
        for end in range(3, 8):
            prefix = torch.nn.functional.pad(
                sequence[:, 2 : end + 1], (8 - (end - 1), 0)
            )  # re-padded
            assert torch.allclose(model.encode(prefix), hidden[:, end], atol=1e-5)


def test_reversed_positions_differ_between_training_step_and_prefix() -> None:
    """The old 'last' origin gives a step-t hidden state that inference never reproduces."""
    torch.manual_seed(0)
    params = SASRecParams(hidden_size=16, num_heads=2, positions_from="last")
    model = SASRec(params, n_items=30, n_users=1, max_len=8).eval()
    sequence = torch.tensor([[0, 0, 5, 9, 2, 17, 4, 11]])
    with torch.no_grad():
        step = model.hidden_states(sequence)[:, 5]
        prefix = torch.tensor([[0, 0, 0, 0, 5, 9, 2, 17]])
        assert not torch.allclose(model.encode(prefix), step, atol=1e-5)
