"""Where the SGLD step search starts: the largest curvature of the potential, against numpy's eigenvalues."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slt_tms.estimators import estimate_llc
from slt_tms.estimators.sgld_bias import top_curvature
from slt_tms.potentials import from_module
from slt_tms.samplers import BatchSupply, ChainStreams, Tempered


def _regression(n: int = 400, d: int = 5):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3.0, d, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
        Y = model(X) + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return model, X, Y


def test_top_curvature_is_the_largest_eigenvalue_of_the_tempered_hessian():
    """mse of a linear model: U = n beta mean((X w - y)^2) + gamma |w - w*|^2 / 2 has the Hessian
    n beta 2 X^T X / n + gamma I; the power iteration on full-batch gradients finds its largest eigenvalue
    (numpy) within 1%, for every chain. A wrong h or a missing 1/(2h) would miss it by orders of magnitude."""
    model, X, Y = _regression()
    pot = from_module(model, (X, Y), loss="mse")
    nbeta, gamma, C, d = 50.0, 3.0, 3, X.shape[1]
    target = Tempered(pot, nbeta, gamma, pot.w_star.expand(C, d).clone())
    batches = BatchSupply(pot.data)
    streams = ChainStreams([1, 2, 3], d, torch.float64, torch.device("cpu"))
    a = top_curvature(target, pot.w_star.expand(C, d).clone(), batches, streams, iters=30)
    Xn = X.numpy()
    exact = np.linalg.eigvalsh(nbeta * 2 * Xn.T @ Xn / len(Xn) + gamma * np.eye(d)).max()
    np.testing.assert_allclose(a.numpy(), exact, rtol=0.01)


@pytest.mark.filterwarnings("ignore:LLC estimate")  # a short run: only where the search starts is checked
def test_minibatch_step_search_starts_at_one_over_the_curvature():
    """On minibatches the search's first round runs at max(warmup step, 1 / a_max) and the result records
    a_max; the minibatch a_max (one batch per iteration) lies within a factor 2 of the full-data value."""
    model, X, Y = _regression()
    res = estimate_llc(model, (X, Y), loss="mse", batch_size=64, num_chains=2, num_draws=200,
                       num_burnin=100, localization=3.0, seed=0, progress=False)
    start = res.config["step_search_start"]
    Xn = X.numpy()
    exact = np.linalg.eigvalsh(res.nbeta * 2 * Xn.T @ Xn / len(Xn) + 3.0 * np.eye(X.shape[1])).max()
    assert 0.5 * exact < start["top_curvature"] < 2 * exact
    first = res.config["step_search"][0]["step_size"]
    assert first == pytest.approx(max(start["warmup_step"], 1 / start["top_curvature"]), rel=1e-6)
