"""Counterfactual inputs of modality attribution: matched good content, blended into a window."""

from __future__ import annotations

import torch

from trd.detector.counterfactual import matched_patch, nominal_inputs, window_and_ring


def _texture(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.randn(1, 3, size + 8, size + 8, generator=g), 9, 1)[0] * 3


def test_window_and_ring_geometry() -> None:
    window, ring = window_and_ring(128, 64, 64, torch.device("cpu"))
    assert window[64, 64] == 1.0 and window[64, 64 + 12] == 1.0 and window[64, 64 + 20] == 0.0
    assert 0.0 < window[64, 64 + 16] < 1.0  # the blended edge
    assert ring[64, 64 + 20] and ring[64, 64 + 31] and not ring[64, 64 + 32] and not ring[64, 64 + 19]


def test_the_shifted_good_sample_is_found_and_aligned() -> None:
    """A sample = a good texture shifted by (4, -6) px with a 'defect' in the window: the good texture
    in the bank is found, aligned by the shift, and the defect is gone from the counterfactual."""
    size = 128
    good = _texture(size + 20, 0)
    sample = good[:, 10 + 4: 10 + 4 + size, 10 - 6: 10 - 6 + size].clone()
    sample[:, 60:68, 60:68] += 5.0  # the defect, inside the window around (64, 64)
    bank = torch.stack([_texture(size, 1), good[:, 10: 10 + size, 10: 10 + size], _texture(size, 2)])
    patch, window = matched_patch(sample, bank, 64, 64)
    clean = good[:, 14: 14 + size, 4: 4 + size]
    inside = window > 0
    torch.testing.assert_close(patch[:, inside], clean[:, inside])
    out = nominal_inputs(sample[None], bank, torch.tensor([64 * size + 64]))[0]
    torch.testing.assert_close(out[:, 60:68, 60:68], clean[:, 60:68, 60:68])
    torch.testing.assert_close(out[:, :, :30], sample[:, :, :30])  # untouched away from the window


def test_windows_at_the_border_are_handled() -> None:
    size = 64
    bank = _texture(size, 3)[None]
    samples = torch.stack([bank[0], bank[0]])
    out = nominal_inputs(samples, bank, torch.tensor([0, size * size - 1]))  # top-left and bottom-right corners
    assert out.shape == (2, 3, size, size) and torch.isfinite(out).all()
    torch.testing.assert_close(out, samples)  # its own best match: nothing changes
