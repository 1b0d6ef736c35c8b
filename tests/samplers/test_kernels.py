"""Kernel invariants (SGLD, MALA, HMC share one convention) and exactness on Gaussian targets.

Invariants (house rule 6): zero noise + zero gradient gives no move; the same seed gives identical
output; batched chains equal a loop over chains; shapes and dtypes are kept. Statistical checks assert an
ESS floor, then |estimate - truth| < K_SE * MCSE (ArviZ); a negative control (a wrong target) must fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slt_tms._rng import spawn_seeds
from slt_tms.potentials import from_callable
from slt_tms.samplers import (
    HMC,
    MALA,
    SGLD,
    BatchSupply,
    ChainStreams,
    Draws,
    RMSProp,
    Tempered,
    Warmup,
    diagnostics,
    run_chains,
    sample,
)

K_SE = 4.0  # two-sided false-alarm rate 6e-5 per check
KERNELS = [SGLD(), SGLD(integrator="lm"), MALA(), HMC(num_leapfrog=4)]


def _quartic(w: torch.Tensor, rows=None) -> torch.Tensor:
    """A non-quadratic potential, written with products (a vectorised ``pow`` can differ by one ulp between
    a (C, d) and a (1, d) input, which would break the bitwise batched-vs-loop invariant)."""
    w2 = w * w
    return 0.5 * w2.sum(-1) + 0.25 * (w2 * w2).sum(-1) + w[..., 0] * w[..., 1]


def _target(fn, d: int, dtype=torch.float64, nbeta: float = 1.0, localization: float = 0.0) -> Tempered:
    pot = from_callable(fn, torch.zeros(d, dtype=dtype), n=10)
    return Tempered(pot, nbeta, localization, torch.zeros(d, dtype=dtype))


def _run(kernel, target, w0, seeds, steps, step_size=0.05, record=("loss",), metric=None):
    C, d = w0.shape
    streams = ChainStreams(seeds, d, w0.dtype, w0.device)
    batches = BatchSupply(None)
    state = kernel.init(w0, target, None)
    kw = {"streams": streams, "batches": batches, "metric": metric, "record": record}
    eps = torch.full((C,), step_size, dtype=w0.dtype)
    return run_chains(kernel, target, state, num_steps=steps, step_size=eps, **kw)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_noise_zero_gradient_does_not_move(kernel, dtype):
    w0 = torch.tensor([[0.3, -1.2, 2.0]] * 4, dtype=dtype)
    target = _target(lambda w, rows=None: torch.zeros(w.shape[:-1], dtype=w.dtype), 3, dtype)
    state = kernel.init(w0, target, None)
    zeros = Draws(torch.zeros_like(w0), torch.full((4, 2), 0.5, dtype=dtype), None)
    for _ in range(5):
        state, info = kernel.step(state, target, 0.1, None, zeros)
    assert torch.equal(state.w, w0)
    assert state.w.dtype == dtype and info.loss.shape == (4,)


def test_sgld_deterministic_part_is_the_documented_update():
    # w - eps/2 (nbeta grad L + gamma (w - w*)) with L = |w|^2 / 2, no noise.
    target = _target(lambda w, rows=None: 0.5 * (w * w).sum(-1), 2, nbeta=10.0, localization=2.0)
    w0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    state = SGLD().init(w0, target, None)
    state, info = SGLD().step(state, target, 0.01, None, Draws(torch.zeros_like(w0), torch.rand(1, 2), None))
    torch.testing.assert_close(state.w, w0 - 0.005 * (10.0 * w0 + 2.0 * w0), rtol=0, atol=1e-15)
    torch.testing.assert_close(info.loss, torch.tensor([2.5], dtype=torch.float64))
    assert torch.isnan(info.accept_prob).all()  # no previous move at the first step


def test_sgld_mala_diagnostic_matches_the_direct_formula():
    target = _target(_quartic, 3, nbeta=3.0, localization=0.5)
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    eps = 0.2
    k = SGLD()
    s0 = k.init(w0, target, None)
    xi = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    s1, _ = k.step(s0, target, eps, None, Draws(xi, torch.rand(2, 2), None))
    _, info = k.step(
        s1, target, eps, None, Draws(torch.zeros(2, 3, dtype=torch.float64), torch.rand(2, 2), None)
    )
    e0, e1 = target.evaluate(w0, None), target.evaluate(s1.w, None)

    def logq(a, b, gb):  # log N(a; b - eps/2 g(b), eps I)
        r = a - b + 0.5 * eps * gb
        return -(r * r).sum(-1) / (2 * eps)

    direct = (e0.potential - e1.potential) + logq(w0, s1.w, e1.grad) - logq(s1.w, w0, e0.grad)
    torch.testing.assert_close(info.accept_prob, torch.exp(direct.clamp(max=0.0)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_same_seed_same_output_and_batched_equals_loop(kernel):
    target = _target(_quartic, 3)
    w0 = torch.tensor([[0.1, 0.2, -0.3], [1.0, 0.0, 0.5], [-0.4, 0.3, 0.2]], dtype=torch.float64)
    seeds = spawn_seeds(7, 3)
    a = _run(kernel, target, w0, seeds, 40)
    b = _run(kernel, target, w0, seeds, 40)
    assert np.array_equal(a.records["loss"], b.records["loss"])
    for k in range(3):
        single = _run(kernel, target, w0[k : k + 1], seeds[k : k + 1], 40)
        np.testing.assert_allclose(single.records["loss"][0], a.records["loss"][k], rtol=1e-12, atol=1e-14)


def test_hmc_jitters_the_step_size_and_costs_exactly_num_leapfrog_gradients():
    """Every chain takes num_leapfrog steps, so a transition of any number of chains costs exactly that many
    batched gradients; the trajectory length varies through the step size h = eps (1 + j (2u - 1)), u the
    chain's second uniform: one leapfrog step from w = 0 (zero gradient of |w|^2 / 2) with momentum 1
    moves w to exactly h."""
    target = _target(lambda w, rows=None: 0.5 * (w * w).sum(-1), 2)
    kernel = HMC(num_leapfrog=1, jitter=0.2)
    w0 = torch.zeros(5, 2, dtype=torch.float64)
    normal = torch.ones(5, 2, dtype=torch.float64)
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    uniform = torch.stack([torch.full_like(u, 0.5), u], 1)
    state, info = kernel.step(kernel.init(w0, target, None), target, 0.1, None, Draws(normal, uniform, None))
    # one leapfrog step from w = 0 (gradient 0) with p = 1: w = h * p, h = 0.1 * (1 + 0.2 * (2u - 1))
    h = 0.1 * (1 + 0.2 * (2 * u - 1))
    assert bool((info.accept_prob > 0.99).all())  # accepted (uniform 0.5): state.w is the proposal
    torch.testing.assert_close(state.w[:, 0], h)
    assert info.num_grads == 1
    for C in (1, 4, 64):
        k8 = HMC(num_leapfrog=8)
        w = torch.randn(C, 2, dtype=torch.float64)
        d = Draws(torch.randn(C, 2, dtype=torch.float64), torch.rand(C, 2, dtype=torch.float64), None)
        _, info = k8.step(k8.init(w, target, None), target, 0.2, None, d)
        assert info.num_grads == 8 and info.num_steps.tolist() == [8] * C


def test_exact_localization_flow_has_no_energy_error_and_equals_the_leapfrog_at_gamma_zero():
    """With a constant loss U is the localization alone: the exact oscillator flow conserves H at any step
    size (acceptance 1 at eps = 3, where the leapfrog on the same target is unstable and rejects); at
    gamma = 0 the kernel is the leapfrog bit for bit."""
    target = _target(lambda w, rows=None: 0.0 * w.sum(-1), 5, localization=4.0)
    w0 = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    draws = Draws(torch.randn(6, 5, dtype=torch.float64), torch.full((6, 2), 0.5, dtype=torch.float64), None)
    exact, plain = HMC(num_leapfrog=3, exact_localization=True), HMC(num_leapfrog=3)
    _, info = exact.step(exact.init(w0, target, None), target, 3.0, None, draws)
    assert float(info.energy_error.abs().max()) < 1e-10
    _, info_plain = plain.step(plain.init(w0, target, None), target, 3.0, None, draws)
    assert float(info_plain.energy_error.abs().min()) > 1.0  # negative control: leapfrog error at 3 / omega
    flat = _target(_quartic, 2)
    w0 = torch.randn(4, 2, dtype=torch.float64)
    d = Draws(torch.randn(4, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64), None)
    a, _ = exact.step(exact.init(w0, flat, None), flat, 0.3, None, d)
    b, _ = plain.step(plain.init(w0, flat, None), flat, 0.3, None, d)
    assert torch.equal(a.w, b.w) and torch.equal(a.potential, b.potential)


def test_exact_localization_kernel_is_exact_on_a_singular_target_and_negative_control(nc_exact):
    """U = nbeta w1^2 w2^2 + gamma |w|^2 / 2 (a normal crossing, nbeta = 5, gamma = 1, far from Gaussian):
    the kernel with the exact localization flow (3 steps) reproduces E[w1^2 w2^2] computed by quadrature
    (w1 integrated analytically) within K_SE standard errors, and not the value at nbeta = 10."""

    def expected(nbeta: float) -> float:
        return nc_exact(2, nbeta) / nbeta

    target = _target(lambda w, rows=None: w[..., 0] * w[..., 0] * w[..., 1] * w[..., 1], 2, nbeta=5.0,
                     localization=1.0)
    res = sample(
        HMC(num_leapfrog=3, exact_localization=True),
        target,
        torch.zeros(4, 2, dtype=torch.float64),
        num_warmup=500,
        num_draws=4000,
        chain_seeds=spawn_seeds(5, 4),
        target_accept=0.9,
    )
    x = res.records["loss"]
    se = diagnostics.mcse_mean(x)
    assert diagnostics.rhat(x) < 1.01 and diagnostics.ess(x) > 1000
    assert abs(x.mean() - expected(5.0)) < K_SE * se, (x.mean(), se, expected(5.0))
    assert abs(x.mean() - expected(10.0)) > K_SE * se


def test_streams_follow_the_documented_block_order():
    s = ChainStreams(
        [11, 12], d=3, dtype=torch.float64, device=torch.device("cpu"), num_rows=10, batch_size=4, block=5
    )
    draws = [Draws(*(None if t is None else t.clone() for t in s.next())) for _ in range(7)]  # views: copy
    g = torch.Generator().manual_seed(12)
    normal = torch.randn(5, 3, generator=g, dtype=torch.float64)
    uniform = torch.rand(5, 2, generator=g, dtype=torch.float64)
    index = torch.randint(0, 10, (5, 4), generator=g)
    assert torch.equal(draws[2].normal[1], normal[2])
    assert torch.equal(draws[4].uniform[1], uniform[4])
    assert torch.equal(draws[3].index[1], index[3])
    normal2 = torch.randn(5, 3, generator=g, dtype=torch.float64)  # the second block continues the stream
    assert torch.equal(draws[6].normal[1], normal2[1])


def _gaussian_check(records: np.ndarray, mean: np.ndarray, var: np.ndarray, ess_floor: float) -> list[float]:
    z = []
    for i in range(records.shape[-1]):
        x = records[..., i]
        ess = diagnostics.ess(x)
        assert ess > ess_floor, f"ESS of coordinate {i}: {ess:.0f}"
        z.append(abs(x.mean() - mean[i]) / (x.std() / math.sqrt(ess)))
        sq = (x - mean[i]) ** 2
        z.append(abs(sq.mean() - var[i]) / (sq.std() / math.sqrt(diagnostics.ess(sq))))
    return z


@pytest.mark.parametrize("kernel", [MALA(), HMC(num_leapfrog=8)], ids=lambda k: k.name)
def test_metropolis_kernels_are_exact_on_an_anisotropic_gaussian_and_negative_control(kernel):
    """Variances 1 and 1e-2 (a condition number of 100): warmup adapts step size and metric; the moments
    match within K_SE standard errors; the same draws do NOT match a wrong target (variance x 1.5)."""
    var = np.array([1.0, 0.01, 0.3])
    prec = torch.tensor(1.0 / var)
    target = _target(lambda w, rows=None: 0.5 * (w * w * prec.to(w)).sum(-1), 3)
    res = sample(
        kernel,
        target,
        torch.zeros(4, 3, dtype=torch.float64),
        num_warmup=500,
        num_draws=3000,
        chain_seeds=spawn_seeds(3, 4),
        target_accept=0.7,
    )
    z = _gaussian_check(res.records["w"], np.zeros(3), var, ess_floor=300)
    assert max(z) < K_SE, z
    with pytest.raises(AssertionError):
        assert max(_gaussian_check(res.records["w"], np.zeros(3), 1.5 * var, ess_floor=300)) < K_SE


def test_sgld_stationary_variance_has_the_known_discretisation_bias():
    """Unadjusted Langevin on U = w^2 / 2 has stationary variance 1 / (1 - eps / 4): the measured variance
    matches that (not 1) within K_SE standard errors; a half step halves the bias."""
    target = _target(lambda w, rows=None: 0.5 * (w * w).sum(-1), 1)
    for eps in (0.8, 0.4):
        res = _run(
            SGLD(diagnose=False),
            target,
            torch.zeros(8, 1, dtype=torch.float64),
            spawn_seeds(eps > 0.5, 8),
            20_000,
            step_size=eps,
            record=("w",),
        )
        x = res.records["w"][:, 1000:, 0] ** 2
        se = x.std() / math.sqrt(diagnostics.ess(x))
        assert abs(x.mean() - 1.0 / (1.0 - eps / 4.0)) < K_SE * se
        assert abs(x.mean() - 1.0) > K_SE * se  # negative control: the bias is real and detected


def test_lm_integrator_is_exact_on_a_gaussian_at_any_stable_step_and_negative_control():
    """The Leimkuhler-Matthews integrator on U = sum_i a_i w_i^2 / 2 has stationary variance exactly 1 / a_i
    at every stable step (eps a_i < 4; derivation in the sgld module docstring), where Euler's is
    1 / (a_i (1 - eps a_i / 4)). At eps a = (0.5, 2.5) the measured variances match 1 / a within K_SE
    standard errors; Euler at the same steps and noises misses them (negative control)."""
    a = torch.tensor([0.5, 2.5], dtype=torch.float64)
    target = _target(lambda w, rows=None: 0.5 * (w * w * a.to(w)).sum(-1), 2)
    for integrator, exact in (("lm", True), ("euler", False)):
        res = _run(
            SGLD(diagnose=False, integrator=integrator),
            target,
            torch.zeros(8, 2, dtype=torch.float64),
            spawn_seeds(7, 8),
            20_000,
            step_size=1.0,
            record=("w",),
        )
        for i in range(2):
            x = res.records["w"][:, 1000:, i] ** 2 * float(a[i])  # mean 1 where the variance is 1 / a_i
            se = x.std() / math.sqrt(diagnostics.ess(x))
            if exact:
                assert abs(x.mean() - 1.0) < K_SE * se
            elif i == 1:  # eps a = 2.5: Euler's variance is 1 / (1 - 0.625) = 2.67 times the target's
                assert abs(x.mean() - 1.0 / (1.0 - 2.5 / 4.0)) < K_SE * se
                assert abs(x.mean() - 1.0) > K_SE * se


def test_lm_integrator_keeps_the_previous_noise_and_rejects_unknown_names():
    """w_1 = w_0 - (eps/2) grad U(w_0) + sqrt(eps) xi_0 / 2 (no previous noise), then
    w_2 = w_1 - (eps/2) grad U(w_1) + sqrt(eps) (xi_0 + xi_1) / 2, computed by hand on U = |w|^2 / 2."""
    target = _target(lambda w, rows=None: 0.5 * (w * w).sum(-1), 2)
    k = SGLD(integrator="lm", diagnose=False)
    w0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    xi0 = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    xi1 = torch.tensor([[1.1, 0.2]], dtype=torch.float64)
    eps = 0.1
    s = k.init(w0, target, None)
    s, _ = k.step(s, target, eps, None, Draws(xi0, torch.rand(1, 2), None))
    w1 = w0 - eps / 2 * w0 + math.sqrt(eps) * xi0 / 2
    torch.testing.assert_close(s.w, w1)
    s, _ = k.step(s, target, eps, None, Draws(xi1, torch.rand(1, 2), None))
    torch.testing.assert_close(s.w, w1 - eps / 2 * w1 + math.sqrt(eps) * (xi0 + xi1) / 2)
    with pytest.raises(ValueError, match="integrator"):
        SGLD(integrator="leapfrog")
    with pytest.raises(ValueError, match="does not report"):  # dual averaging would read NaN acceptances
        streams = ChainStreams([1], 2, torch.float64, torch.device("cpu"))
        eps1 = torch.full((1,), 0.1, dtype=torch.float64)
        run_chains(k, target, k.init(w0, target, None), num_steps=2, streams=streams,
                   batches=BatchSupply(None), step_size=eps1, warmup=Warmup(2, 0.8))


def test_rmsprop_warmup_adapts_then_freezes_the_metric():
    target = _target(lambda w, rows=None: 0.5 * (w * w * torch.tensor([100.0, 1.0]).to(w)).sum(-1), 2)
    w0 = torch.zeros(2, 2, dtype=torch.float64)
    streams = ChainStreams([1, 2], 2, torch.float64, torch.device("cpu"))
    state = SGLD().init(w0, target, None)
    res = run_chains(
        SGLD(),
        target,
        state,
        num_steps=300,
        streams=streams,
        batches=BatchSupply(None),
        step_size=torch.full((2,), 1e-2, dtype=torch.float64),
        warmup=Warmup(300, rmsprop=RMSProp()),
        record=(),
    )
    assert res.metric is not None and res.metric.shape == (2, 2)
    assert bool((res.metric[:, 0] < res.metric[:, 1]).all())  # the stiff direction gets the smaller step
    after = run_chains(
        SGLD(),
        target,
        res.state,
        num_steps=50,
        streams=streams,
        batches=BatchSupply(None),
        step_size=res.step_size,
        metric=res.metric,
        record=(),
    )
    assert torch.equal(after.metric, res.metric)


def test_bad_inputs():
    target = _target(_quartic, 3)
    with pytest.raises(ValueError, match="num_chains, d"):
        MALA().init(torch.zeros(3), target, None)
    with pytest.raises(ValueError, match="num_leapfrog"):
        HMC(num_leapfrog=0)
    with pytest.raises(ValueError, match="jitter"):
        HMC(jitter=1.5)
    with pytest.raises(ValueError, match="rmsprop decay"):
        RMSProp(decay=1.0)


@pytest.mark.parametrize("kernel", [MALA(), HMC(num_leapfrog=1, jitter=0.0), HMC(num_leapfrog=5)])
def test_rejected_proposals_report_the_lowest_loss_they_reached(kernel):
    """``rejected_min_loss``: inf where the transition was accepted; where it was rejected, the loss at the
    proposal (MALA; HMC with one leapfrog step: recomputed here from the update's formula), at most the
    loss of any point of the path, so at most the proposal's loss (HMC with several steps)."""
    torch.manual_seed(0)
    C, d = 64, 3
    pot = from_callable(_quartic, torch.zeros(d, dtype=torch.float64), n=100)
    target = Tempered(pot, nbeta=50.0, localization=1.0, center=torch.zeros(d, dtype=torch.float64))
    state = kernel.init(torch.randn(C, d, dtype=torch.float64) * 0.3, target, None)
    # half the chains accept whatever they propose (uniform 0: log u = -inf), half reject almost surely
    u = torch.stack([torch.where(torch.arange(C) < C // 2, 0.0, 1.0 - 1e-12), torch.full((C,), 0.5)], 1)
    draws = Draws(torch.randn(C, d, dtype=torch.float64), u.double(), None)
    eps = torch.full((C,), 0.3, dtype=torch.float64)
    new, info = kernel.step(state, target, eps, None, draws)
    moved = (new.w != state.w).any(-1)
    r = info.rejected_min_loss
    assert torch.isinf(r[moved]).all() and torch.isfinite(r[~moved]).all() and (~moved).sum() >= C // 4
    if isinstance(kernel, MALA):
        prop = state.w - 0.15 * state.grad + math.sqrt(0.3) * draws.normal
    else:  # one leapfrog step: w + eps p - eps^2 / 2 grad U, p = the momentum draw (identity metric)
        prop = state.w + 0.3 * draws.normal - 0.5 * 0.3**2 * state.grad
    at_prop = pot.loss(prop)
    if isinstance(kernel, MALA) or kernel.num_leapfrog == 1:
        torch.testing.assert_close(r[~moved], at_prop[~moved])
    else:  # the path's first point is the same proposal; the lowest loss along the path is not above it
        assert (r[~moved] <= at_prop[~moved] + 1e-12).all()
