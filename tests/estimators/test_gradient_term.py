"""The first-order term of a non-zero gradient at w*, against the exact Gaussian law of a linear regression
taken off its least-squares point: there the localized tempered posterior is Gaussian with precision
A = nbeta H + gamma I and mean mu = -nbeta A^{-1} grad L_n(w*), so the term nbeta grad.mu, the estimate and
its shift have closed forms (computed here with numpy, not with the package)."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_tms.estimators import LLCResult, estimate_llc
from slt_tms.estimators.gradient_term import anchor_gradient
from slt_tms.potentials import from_module
from slt_tms.samplers.base import BatchSupply, ChainStreams, Tempered
from slt_tms.samplers.hmc import HMC
from slt_tms.samplers.run import STEIN_EVERY, run_chains
from slt_tms.samplers.sgld import SGLD

N, D, GAMMA = 1000, 3, 1.0


def _regression(offset: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, float]]:
    g = torch.Generator().manual_seed(1)
    X = torch.randn(N, D, generator=g)
    y = X @ torch.tensor([[1.0], [-0.5], [0.3]]) + 0.5 * torch.randn(N, 1, generator=g)
    Xd, yd = X.double().numpy(), y.double().numpy()[:, 0]
    w_hat = np.linalg.solve(Xd.T @ Xd, Xd.T @ yd)
    model = nn.Linear(D, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w_hat + offset * np.array([1.0, -1.0, 0.5]))[None].float())
    w_star = model.weight.detach().double().numpy()[0]
    nb = N / math.log(N)
    H = 2 * Xd.T @ Xd / N  # L_n(w) = (w - w_hat)' S (w - w_hat) + const for the mean squared error
    grad = H @ (w_star - w_hat)
    A = nb * H + GAMMA * np.eye(D)
    mu = -nb * np.linalg.solve(A, grad)
    zero = 0.5 * nb * np.trace(H @ np.linalg.inv(A))
    exact = {"term": nb * grad @ mu, "zero_gradient": zero, "grad_norm": float(np.linalg.norm(grad))}
    exact["estimand"] = exact["term"] + zero + 0.5 * nb * mu @ H @ mu
    return model, X, y, exact


def _run(model, X, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_llc(model, (X, y), loss="mse", localization=GAMMA, num_chains=8, seed=0,
                           progress=False)
    return res, [str(w.message) for w in caught if "not a critical point" in str(w.message)]


def test_the_first_order_term_of_a_point_off_the_minimum_matches_the_gaussian_law(tmp_path):
    model, X, y, exact = _regression(0.015)
    res, notes = _run(model, X, y)
    t = res.config["gradient_term"]
    assert t["grad_norm"] == pytest.approx(exact["grad_norm"], rel=1e-3)
    # 8 chains: the term's SE from their spread has 7 degrees of freedom, P(|t_7| > 5) = 0.0016
    assert abs(t["term"] - exact["term"]) < 5 * t["se"], (t, exact)
    assert abs(res.llc - exact["estimand"]) < 3 * res.se, (res.llc, res.se, exact)
    # the shift of the estimate by the gradient lies between T and T/2 (module docstring)
    shift = exact["estimand"] - exact["zero_gradient"]
    assert exact["term"] <= shift <= exact["term"] / 2 < 0
    # about 10% of the estimate: no other flag sees it, the note does
    assert res.ok and res.frac_below_anchor < 0.05, res.summary()
    assert t["status"] == "notable" and len(notes) == 1 and "first-order term" in notes[0]
    assert "w* is not a critical point" in res.summary()
    back = LLCResult.from_json(res.to_json(tmp_path / "r.json"))
    assert back.config["gradient_term"] == t and "w* is not a critical point" in back.summary()
    # the netCDF file alone names the estimate, its SE, convergence and seed (also in the config)
    import arviz as az

    attrs = az.from_netcdf(res.to_netcdf(tmp_path / "r.nc")).posterior.attrs
    assert res.config["seed"] == 0 and attrs["seed"] == 0 and attrs["converged"] == 1
    assert attrs["llc"] == res.llc and attrs["se"] == res.se
    assert LLCResult.from_netcdf(tmp_path / "r.nc").config["gradient_term"] == t
    # a NaN (one chain has no R-hat) is written as null and comes back as NaN: the loaded summary reads
    nan_t = {**t, "rhat": math.nan, "se": math.nan}
    odd = dataclasses.replace(res, config={**res.config, "gradient_term": nan_t})
    for back in (LLCResult.from_json(odd.to_json(tmp_path / "odd.json")),
                 LLCResult.from_netcdf(odd.to_netcdf(tmp_path / "odd.nc"))):
        g = back.config["gradient_term"]
        assert math.isnan(g["rhat"]) and math.isnan(g["se"]) and g["term"] == t["term"]
        assert "w* is not a critical point" in back.summary()


def test_at_the_minimum_the_term_is_negligible():
    model, X, y, exact = _regression(0.0)
    res, notes = _run(model, X, y)
    t = res.config["gradient_term"]
    assert exact["grad_norm"] < 1e-6 and abs(t["term"]) < 1e-4 * res.llc
    assert t["status"] == "negligible" and notes == []
    assert "(negligible)" in res.summary()


def test_the_anchor_gradient_is_the_full_data_gradient_for_every_source():
    model, X, y, _ = _regression(0.05)
    want = torch.autograd.grad(nn.functional.mse_loss(model(X), y), model.weight)[0].reshape(-1)
    for n in (None, 300):  # the full batch, and chunks of 300 rows through the chunked path
        pot = from_module(model, (X, y), loss="mse")
        if n is not None:
            pot = dataclasses.replace(pot, full_batch=None)
            with mock.patch("slt_tms.estimators.gradient_term.ANCHOR_CHUNK", n):
                got = anchor_gradient(pot, pot.w_star)
        else:
            got = anchor_gradient(pot, pot.w_star)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # a DataLoader is streamed: another pass over it is not taken for a note
    streamed = from_module(model, DataLoader(TensorDataset(X, y), batch_size=300), loss="mse")
    assert anchor_gradient(streamed, streamed.w_star) is None


@pytest.mark.parametrize(("kernel", "stop_at"), [(HMC(num_leapfrog=2), None), (HMC(num_leapfrog=2), 60),
                                              (SGLD(), None)])
def test_run_chains_projects_every_tenth_draw_where_its_gradient_was_taken(kernel, stop_at):
    model, X, y, _ = _regression(0.05)
    pot = from_module(model, (X, y), loss="mse")
    C = 2
    target = Tempered(pot, 100.0, 1.0, pot.w_star)
    batches = BatchSupply(pot.data, None)
    state = kernel.init(pot.w_star.expand(C, -1).clone(), target, batches(None))
    w_start = state.w.clone()
    streams = ChainStreams([1, 2], pot.d, pot.w_star.dtype, pot.w_star.device, num_rows=N)
    stop = None if stop_at is None else (lambda recent, taken: taken >= stop_at)
    v = torch.randn(C, pot.d, generator=torch.Generator().manual_seed(0))
    res = run_chains(kernel, target, state, num_steps=95, streams=streams, batches=batches,
                     step_size=torch.full((C,), 0.005), record=("w", "stein"), stop_if=stop, check_every=20,
                     directions=v)
    taken = res.num_steps
    assert taken == (95 if stop_at is None else stop_at)
    w = torch.from_numpy(res.records["w"])  # (C, T, d) after each step
    if kernel.name == "sgld":  # SGLD reports the gradient where its step started
        w = torch.cat([w_start[:, None], w[:, :-1]], 1)
    at = w[:, ::STEIN_EVERY]
    assert res.records["dir_u"].shape == (C, -(-taken // STEIN_EVERY))
    want_u = ((at - pot.w_star) * v[:, None]).sum(-1)
    grad_u = target.evaluate(at.reshape(-1, pot.d), pot.data.full()).grad.reshape(at.shape)  # full-data U
    np.testing.assert_allclose(res.records["dir_u"], want_u.double().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.records["dir_grad"], (grad_u * v[:, None]).sum(-1).double().numpy(),
                               rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="'stein' record needs directions"):
        run_chains(kernel, target, state, num_steps=5, streams=streams, batches=batches,
                   step_size=torch.full((C,), 0.005), record=("stein",))


def test_the_three_states_of_the_term_and_their_words():
    from slt_tms.estimators.gradient_term import gradient_term
    from slt_tms.estimators.result import gradient_term_note
    from slt_tms.estimators.tracks import Track

    rng = np.random.default_rng(0)
    good = np.ones(4, dtype=bool)

    def track(mean_a, spread):  # a: nbeta g.(w - w*) / nbeta, b: a control variate of mean zero
        b = rng.normal(size=(4, 400))
        a = mean_a + spread * rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(4, 400)) + 0.5 * b
        tr = Track(chains=[0, 1, 2, 3], grad_norm=0.3)
        tr.dir_u, tr.dir_grad = [a[:, :200], a[:, 200:]], [b[:, :200], b[:, 200:]]
        return tr

    notable = gradient_term(track(-0.2, 0.001), good, 10.0, 20.0)  # T = -2: 10% of 20, sharp
    negligible = gradient_term(track(-0.01, 0.001), good, 10.0, 20.0)  # T = -0.1, sharp
    uncertain = gradient_term(track(-0.05, 0.3), good, 10.0, 20.0)  # chains far apart: +/- about 1.5
    assert abs(notable["term"] + 2.0) < 4 * notable["se"] and notable["se"] < 0.05
    assert [t["status"] for t in (notable, negligible, uncertain)] == ["notable", "negligible", "uncertain"]
    words = gradient_term_note(notable)
    assert "is 10% of the estimate in size; for a loss quadratic around w* the gradient lowers" in words
    assert "too uncertain to rule out a size of 5% or more" in gradient_term_note(uncertain)
    assert notable["shift_range"] == [notable["term"], notable["term"] / 2]
    uphill = gradient_term(track(0.2, 0.001), good, 10.0, 20.0)
    assert uphill["shift_range"] is None and "it is positive" in gradient_term_note(uphill)
    assert gradient_term(Track(chains=[0]), good[:1], 10.0, 20.0) is None  # nothing recorded (streamed data)
    # chains that each sit still at their own place along the gradient (between-chain sd 1 against a
    # within-chain sd of 0.5): the projection's R-hat is near sqrt(1 + 1/0.26) = 2.2, and the note says so
    assert notable["rhat"] < 1.01 and "mixed slowly" not in words
    stuck = gradient_term(track(-0.2, 1.0), good, 10.0, 20.0)
    assert stuck["rhat"] > 1.5 and "mixed slowly along the gradient (split R-hat" in gradient_term_note(stuck)


def test_a_ladder_shows_one_line_when_every_rung_is_negligible_and_each_rung_otherwise():
    for offset, want in ((0.0, 1), (0.015, 2)):
        model, X, y, _ = _regression(offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one pass of the rungs (asymptotic_rse=None): the lines are per rung, not about the fit
            res = estimate_llc(model, (X, y), loss="mse", ladder=(1, 2), asymptotic_rse=None, seed=0,
                               progress=False)
        lines = [ln for ln in res.summary().splitlines() if ln.startswith("  gradient at w*")]
        assert len(lines) == want, res.summary()
        assert ("negligible at every rung" in lines[0]) is (offset == 0.0)


def test_a_series_has_the_gradient_columns_and_marks_the_points_that_are_not_critical():
    from slt_tms.estimators.series import SERIES_COLUMNS, estimate_llc_series

    (at_min, X, y, _), (off, _, _, exact) = _regression(0.0), _regression(0.015)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series = estimate_llc_series([at_min.state_dict(), off.state_dict()],
                                     lambda: nn.Linear(D, 1, bias=False), (X, y), loss="mse", seed=0,
                                     progress=False)
    notes = [str(w.message) for w in caught if "critical point" in str(w.message)]
    assert len(notes) == 1 and notes[0].startswith("1 of 2 checkpoints are not critical points"), notes
    found = re.search(r"notable at step 1 \((-[0-9.]+) \+/- ([0-9.]+) of ([0-9.]+)\)", notes[0])
    assert found and abs(float(found[1]) - exact["term"]) < 5 * float(found[2]) + 1e-3, (notes[0], exact)
    rows = series.rows()
    assert list(rows[0]) == list(SERIES_COLUMNS)
    assert rows[0]["grad_norm"] < 1e-6 and rows[1]["grad_norm"] == pytest.approx(exact["grad_norm"], rel=1e-3)
    lines = series.summary().splitlines()[1:]
    assert "not critical" not in lines[0] and "w* not critical: first-order term -0.1" in lines[1]
    assert rows[1]["first_order_status"] == "notable" and 0 < rows[1]["first_order_term_se"] < 0.01
    assert rows[0]["first_order_status"] == "negligible"
    assert "first_order_term,first_order_term_se,first_order_status" in series.to_csv().splitlines()[0]


def test_a_series_out_of_training_order_says_where_its_calibration_comes_from():
    from slt_tms.estimators.series import estimate_llc_series

    model, X, y, _ = _regression(0.0)
    with pytest.warns(UserWarning, match=r"not in training order.*\(checkpoint 1, step 100\), not from the "
                                         r"latest \(step 200\)"):
        estimate_llc_series([model.state_dict()] * 2, lambda: nn.Linear(D, 1, bias=False), (X, y),
                            steps=[200, 100], loss="mse", seed=0, progress=False, num_draws=40, num_burnin=20)
