"""The population loss's closed-form gradient (no autograd) against reverse-mode autograd."""

import pytest
import torch

from slt_tms.theory import kgon, population_grad_flat, population_loss_flat, population_value_and_grad_flat


@pytest.mark.parametrize("c", [4, 6])
def test_population_value_and_grad_equal_autograd(c):
    gen = torch.Generator().manual_seed(c)
    w = torch.cat([kgon(c, c).flat(dtype=torch.float64)[None],  # a critical point: gradient ~ 0
                   torch.randn(5, 3 * c, dtype=torch.float64, generator=gen)])
    w[1, 2 * c :] = 0.0  # b = 0 exactly
    w[2, : 2 * c] = 0.0  # every feature dead
    value, grad = population_value_and_grad_flat(w, c)
    wg = w.clone().requires_grad_(True)
    ref = population_loss_flat(wg, c)
    (auto,) = torch.autograd.grad(ref.sum(), wg)
    torch.testing.assert_close(value, ref.detach(), rtol=1e-13, atol=0.0)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-14)
    assert not value.requires_grad and not grad.requires_grad
    assert float(grad[0].abs().max()) < 1e-8
    assert torch.equal(population_grad_flat(w, c), grad)  # the gradient alone: the same numbers


def test_population_value_and_grad_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \(M, 18\)"):
        population_value_and_grad_flat(torch.zeros(18, dtype=torch.float64), 6)
    with pytest.raises(ValueError, match="floating-point"):
        population_value_and_grad_flat(torch.zeros(2, 18, dtype=torch.long), 6)
