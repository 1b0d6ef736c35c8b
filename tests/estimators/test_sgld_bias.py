"""The SGLD step search: where it starts (the largest curvature of the potential, against numpy's
eigenvalues), when it trusts a reading, and how long the coupled check's fine chain burns in."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from slt_tms.estimators import LLCConfig, estimate_llc, sgld_bias
from slt_tms.estimators.sgld_bias import (
    STEP_TARGET,
    TRUSTED_READING,
    coupled_bias_check,
    top_curvature,
    tune_step,
)
from slt_tms.potentials import from_module
from slt_tms.samplers import SGLD, BatchSupply, ChainStreams, Tempered


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
    # the warmup ran at 1/a_max near w* without adapting its step; the search starts at 1/a_max of the
    # chains' points after it (they have spread, and the curvature there is the one that matters)
    assert first == pytest.approx(1 / start["top_curvature"], rel=1e-6)
    assert start["warmup_step"] != pytest.approx(first, rel=1e-3)
    assert 0.25 / exact < start["warmup_step"] < 4 / exact


def _scripted_rounds(monkeypatch, readings):
    """tune_step with its coupled rounds replaced by readings of r = 2|D| / lambda, one per round (lambda
    10 at every step), recording the step each round ran at."""
    steps = []

    def fake(kernel, target, w, eps, metric, batches, streams, burn, keep, anchor, bar=None, center_loss=None,
             start=None):
        r = readings[len(steps)]
        steps.append(float(eps[0]))
        nb, lam = float(target.nbeta), 10.0
        lf, l0 = np.full((w.shape[0], keep), lam / nb), np.zeros((w.shape[0], keep))
        return lf + r * lam / (2 * nb), lf, l0, SimpleNamespace(w=w.clone())

    monkeypatch.setattr(sgld_bias, "_coupled", fake)
    target = Tempered.gaussian(3, nbeta=10.0, localization=1.0)
    streams = ChainStreams([1, 2], 3, torch.float64, torch.device("cpu"))
    w0 = torch.zeros(2, 3, dtype=torch.float64)
    w, eps, grads, history = tune_step(SGLD(diagnose=False, integrator="lm"), target, w0,
                                       torch.full((2,), 1e-2, dtype=torch.float64), None, BatchSupply(None),
                                       streams, [slice(0, 2)], torch.zeros(2, dtype=torch.float64))
    return steps, w, eps, grads, history


def test_step_search_trusts_a_reading_too_large_by_at_most_four(monkeypatch):
    """A reading of r = 0.12 (above 1.5 r*, below 4 r*) lowers the step by r*/r without another round; the
    chains then take the round's 50 burn-in steps at the lowered step (one gradient each)."""
    assert TRUSTED_READING * STEP_TARGET == pytest.approx(0.2)
    steps, w, eps, grads, history = _scripted_rounds(monkeypatch, [0.12])
    assert steps == [1e-2] and len(history) == 1
    np.testing.assert_allclose(eps.numpy(), 1e-2 * STEP_TARGET / 0.12, rtol=1e-12)
    assert grads == 3 * (50 + 150) + 50
    assert bool((w != 0).all())  # the burn-in steps moved the chains (the scripted rounds did not)


def test_step_search_measures_again_after_a_reading_beyond_the_trusted_range(monkeypatch):
    """Negative control: r = 0.3 (6 r*) is not trusted. The step falls by the clip's 1/4 and the next round
    measures it (0.05: settled there, no extra burn-in); likewise a reading that is within range once a
    step has been measured too small (bracketing takes over)."""
    steps, _, eps, grads, _ = _scripted_rounds(monkeypatch, [0.3, 0.05])
    assert steps == [1e-2, 2.5e-3] and grads == 2 * 3 * (50 + 150)
    np.testing.assert_allclose(eps.numpy(), 2.5e-3)
    steps, _, eps, _, _ = _scripted_rounds(monkeypatch, [0.01, 0.12, 0.05])
    assert steps == pytest.approx([1e-2, 5e-2, math.sqrt(1e-2 * 5e-2)], rel=1e-12)
    np.testing.assert_allclose(eps.numpy(), math.sqrt(1e-2 * 5e-2))


@pytest.mark.parametrize(("ess", "burn"), [(None, 250), (20.0, 200), (400.0, 50), (2.0, 250)])
def test_coupled_check_burns_in_for_two_autocorrelation_times(ess, burn):
    """The fine chain's burn-in: 2 C draws / ESS steps of the run (C = 2 chains, 1 000 draws), at least 50
    and at most num_burnin // 2 (its length without an ESS); 250 kept steps (draws // 4)."""
    target = Tempered.gaussian(3, nbeta=10.0, localization=1.0)
    kernel = SGLD(diagnose=False, integrator="lm")
    state = kernel.init(torch.zeros(2, 3, dtype=torch.float64), target, None)
    kw = {} if ess is None else {"ess": ess}
    eps = torch.full((2,), 0.05, dtype=torch.float64)
    bias, continued, _ = coupled_bias_check(kernel, target, state, eps, None, BatchSupply(None), LLCConfig(),
                                            0, 1000, 0.0, 10.0, None, **kw)
    assert bias["continued_draws"] == burn + 250 and continued.shape == (2, burn + 250)
    assert bias["coupled_steps"] == 250 and bias["gradients"] == 3 * (burn + 250)


def test_the_drift_check_reads_growing_chains_and_stays_quiet_on_diverging_ones():
    import warnings

    from slt_tms.estimators.sgld_bias import _drifting

    rng = np.random.default_rng(0)
    flat = 5.0 + 0.1 * rng.normal(size=(4, 40))
    growing = flat + np.linspace(0.0, 3.0, 40)  # the second half's mean about 1.5 (30%) above the first's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings from a chain at 1e308
        assert not _drifting(flat) and _drifting(growing)
        huge = flat.copy()
        huge[0, 20:] = 1e308
        assert not _drifting(huge)
