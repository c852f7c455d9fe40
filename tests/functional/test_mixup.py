import pytest
import torch

from loom.functional import mix, mix_targets


def test_mix_is_the_convex_combination_with_the_permuted_batch():
    x = torch.randn(5, 3)
    permutation = torch.tensor([2, 0, 4, 1, 3])
    expected = torch.stack([0.3 * x[i] + 0.7 * x[permutation[i]] for i in range(5)])
    torch.testing.assert_close(mix(x, permutation, 0.3), expected)


def test_mixed_targets_are_mixed_one_hot_vectors_and_skip_ignored_positions():
    logits = torch.zeros(3, 4)
    labels = torch.tensor([0, 3, -100])
    permutation = torch.tensor([1, 0, 2])
    mixed = mix_targets(logits, labels, permutation, 0.6)
    expected = torch.tensor([[0.6, 0.0, 0.0, 0.4], [0.4, 0.0, 0.0, 0.6], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(mixed, expected)
    dense = torch.softmax(torch.randn(3, 4), dim=1)
    torch.testing.assert_close(
        mix_targets(logits, dense, permutation, 0.6), 0.6 * dense + 0.4 * dense[permutation]
    )


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"weight=1\.5 must be in \[0, 1\]"):
        mix(torch.zeros(2, 1), torch.tensor([1, 0]), 1.5)
    with pytest.raises(TypeError, match=r"mixing needs floating-point values, got torch\.uint8"):
        mix(torch.zeros(2, 1, dtype=torch.uint8), torch.tensor([1, 0]), 0.5)
