"""estimate_llc on user data: a streamed DataLoader is never materialised, the series over checkpoints equals
one-by-one estimates with the same seeds, and sample weights enter the estimate (a zero weight is a dropped
row). The potential-level versions of these (shapes, one anchor loss) are in tests/potentials."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_tms._rng import spawn_seeds
from slt_tms.estimators import estimate_llc
from slt_tms.estimators.series import estimate_llc_series

SHORT = {"num_burnin": 50, "num_draws": 100, "progress": False}


def _regression(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(3, 1, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        n, 1, generator=g, dtype=torch.float64
    )
    return X, Y


def _fitted(X: torch.Tensor, Y: torch.Tensor) -> nn.Module:
    model = nn.Linear(3, 1).double()
    X1 = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    sol = torch.linalg.lstsq(X1, Y).solution
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    return model


# ---------------------------------------------------------------------------------------- streaming
class _CountingRows(TensorDataset):
    """Counts every row read; each read is one row (a materialised copy would read all n at once)."""

    reads = 0

    def __getitem__(self, i: int):
        self.reads += 1
        return super().__getitem__(i)


class _AtMostTwoPasses(DataLoader):
    """Raises when iterated to the end a second time: the first pass is L_n(w*) on the full data, the
    sampler then takes the batches it needs from the second pass without finishing it."""

    passes = 0

    def __iter__(self):
        yield from super().__iter__()
        self.passes += 1
        if self.passes >= 2:
            raise RuntimeError("the DataLoader was iterated to the end twice")


def test_a_dataloader_is_streamed_by_estimate_llc_and_never_materialised():
    n, batch = 4096, 16
    X, Y = _regression(n)
    ds = _CountingRows(X, Y)
    loader = _AtMostTwoPasses(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen: list[int] = []

    def evaluate(model, rows):  # records the size of every batch the potential is evaluated on
        seen.append(int(rows[0].shape[0]))
        return nn.functional.mse_loss(model(rows[0]), rows[1])

    steps = 40 + 80
    with pytest.warns(RuntimeWarning, match="not trustworthy"):  # 80 draws: not converged, flagged
        res = estimate_llc(
            _fitted(X, Y), loader, evaluate=evaluate, sampler="sgld", step_size=1e-4, num_burnin=40,
            num_draws=80, bias_check=False, progress=False,
        )
    assert res.n == n and res.sampler == "sgld" and math.isfinite(res.llc)
    assert res.config["potential"]["data"]["kind"] == "DataLoader"
    assert max(seen) <= batch  # never more rows than one loader batch at a time
    # one pass for L_n(w*), a probe batch, then one batch per sampler step
    assert n <= ds.reads <= n + (steps + 4) * batch, ds.reads
    assert loader.passes == 1
    anchor = nn.functional.mse_loss(_fitted(X, Y)(X), Y).item()
    assert res.anchor_loss == pytest.approx(anchor, rel=1e-10)  # exact, over the whole stream


# ------------------------------------------------------------------------------------------- series
def test_the_series_equals_one_by_one_estimates_with_the_same_seeds():
    X, Y = _regression(300, seed=1)
    make = lambda: nn.Linear(3, 1).double()  # noqa: E731
    best = _fitted(X, Y)
    g = torch.Generator().manual_seed(2)
    ckpts = []
    for scale in (0.0, 0.02, 0.05):
        m = make()
        with torch.no_grad():
            for p, q in zip(m.parameters(), best.parameters(), strict=True):
                p.copy_(q + scale * torch.randn(q.shape, generator=g, dtype=q.dtype))
        ckpts.append(m.state_dict())
    kw = {"loss": "mse", "sampler": "mala", "localization": 10.0, **SHORT}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short chains: flags are compared, not avoided
        series = estimate_llc_series(ckpts, make, (X, Y), seed=7, steps=[10, 20, 30], **kw)
        plain = estimate_llc_series(ckpts, make, (X, Y), seed=7, steps=[10, 20, 30], reuse_calibration=False,
                                    **kw)
        seeds = spawn_seeds(7, 3)
        cal = series.results[-1].calibration  # the last checkpoint runs first; the others start from it
        alone, fresh = [], []
        for i, (state, s) in enumerate(zip(ckpts, seeds, strict=True)):
            m = make()
            m.load_state_dict(state)
            alone.append(estimate_llc(m, (X, Y), seed=s, calibration=None if i == 2 else cal, **kw))
            fresh.append(estimate_llc(m, (X, Y), seed=s, **kw))
    assert [r["step"] for r in series.rows()] == [10, 20, 30]
    assert cal is not None and cal.sampler == "mala"
    assert cal.source == {"checkpoint": "checkpoint 2", "step": 30}
    for ours, ref in [(series, alone), (plain, fresh)]:
        for a, b in zip(ours.results, ref, strict=True):
            assert a.anchor_loss == pytest.approx(b.anchor_loss, rel=1e-12)
            assert a.llc == pytest.approx(b.llc, rel=1e-6, abs=1e-9), (a.headline(), b.headline())
            assert a.se == pytest.approx(b.se, rel=1e-6) and a.flags == b.flags
    used = [r.config["calibration_used"] for r in series.results]
    assert used[2] is None and all(u["source"] == cal.source for u in used[:2])
    assert [u["warmup"] for u in used[:2] if not u["refreshed"]] in ([20, 20], [20], [])
    assert all(r.config["calibration_used"] is None for r in plain.results)


def test_a_series_row_that_ends_flagged_after_a_reused_calibration_is_estimated_again_with_its_own_warmup():
    from slt_tms.estimators.llc import _resolve_config
    from slt_tms.estimators.series import _estimate_batch
    from slt_tms.potentials import from_module

    X, Y = _regression(300, seed=1)
    make = lambda: nn.Linear(3, 1).double()  # noqa: E731
    best = _fitted(X, Y)
    ckpts = [best.state_dict(), best.state_dict()]  # a minimum (chains that escape are no reason to redo)
    # an ESS target out of reach of the budget: every run ends "not converged" (the runs are short)
    kw = {"loss": "mse", "sampler": "mala", "localization": 10.0, "num_burnin": 60, "max_draws": 100,
          "target_ess": 10_000, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        series = estimate_llc_series(ckpts, make, (X, Y), seed=3, steps=[1, 2], **kw)
        cal = series.results[1].calibration  # from the last checkpoint, which did not converge either
        seed = spawn_seeds(3, 2)[0]
        own = estimate_llc(best, (X, Y), seed=seed, **kw)  # the checkpoint alone, its own full warmup
        reused = estimate_llc(best, (X, Y), seed=seed, calibration=cal, **kw)
        # as a series whose calibration came from a converged run: the reused run is redone
        cfg = _resolve_config(None, {k: v for k, v in kw.items() if k not in ("loss", "progress")})
        pot = from_module(best, (X, Y), loss="mse")
        (redone,) = _estimate_batch([pot], [{"checkpoint": "c", "step": 1}], [seed], cfg, None, False,
                                    calibration=dataclasses.replace(cal, converged=True))
    # the calibration's own run did not converge: a second run would double the cost for nothing
    assert "retried" not in series.results[0].config["calibration_used"]
    assert series.results[0].llc == pytest.approx(reused.llc, rel=1e-9)
    used = redone.config["calibration_used"]
    assert used["source"] == cal.source and not used["refreshed"]
    retried = used["retried"]  # the first run, from the reused calibration, is kept in the record
    assert retried["llc"] == pytest.approx(reused.llc, rel=1e-9) and retried["flags"] == list(reused.flags)
    assert retried["warmup"] == 20 and used["warmup"] == 60
    # the row is the checkpoint's own full-warmup estimate; its cost counts both runs
    assert redone.llc == pytest.approx(own.llc, rel=1e-9) and redone.se == pytest.approx(own.se)
    assert redone.flags == own.flags and not redone.converged
    assert redone.num_grads == own.num_grads + reused.num_grads
    assert "run again with its own full warmup" in redone.summary()
    # with a fixed length (num_draws) "not converged" is expected and no run is redone
    fixed = _resolve_config(None, {"sampler": "mala", "localization": 10.0, "num_burnin": 60,
                                   "num_draws": 100})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (once,) = _estimate_batch([pot], [{"checkpoint": "c", "step": 1}], [seed], fixed, None, False,
                                  calibration=dataclasses.replace(cal, converged=True))
    assert "retried" not in once.config["calibration_used"] and not once.converged


def test_a_series_warns_its_flagged_rows_at_the_callers_line():
    X, Y = _regression(300, seed=1)
    make = lambda: nn.Linear(3, 1).double()  # noqa: E731
    ckpts = [_fitted(X, Y).state_dict()] * 2  # flagged by the ESS target, out of reach of the budget
    for reuse in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimate_llc_series(ckpts, make, (X, Y), loss="mse", num_burnin=50, max_draws=100,
                                target_ess=10_000, reuse_calibration=reuse, progress=False)
        flagged = [w for w in caught if "is not trustworthy" in str(w.message)]
        assert len(flagged) == 2, [str(w.message) for w in caught]
        assert {w.filename for w in caught} == {__file__}, [(w.filename, w.lineno) for w in caught]


# ------------------------------------------------------------------------------------- sample weights
def test_a_zero_sample_weight_is_a_dropped_row():
    X, Y = _regression(400, seed=3)
    model = _fitted(X, Y)
    keep = torch.zeros(400, dtype=torch.float64)
    keep[::2] = 1.0
    kw = {"loss": "mse", "sampler": "mala", "seed": 4, **SHORT}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        weighted = estimate_llc(model, (X, Y, keep), n=200, **kw)
        dropped = estimate_llc(model, (X[::2], Y[::2]), **kw)
        uniform = estimate_llc(model, (X, Y, torch.ones(400, dtype=torch.float64)), n=200, **kw)
    assert weighted.n == dropped.n == 200 and weighted.nbeta == dropped.nbeta
    assert weighted.anchor_loss == pytest.approx(dropped.anchor_loss, rel=1e-12)
    assert weighted.llc == pytest.approx(dropped.llc, rel=1e-6), (weighted.headline(), dropped.headline())
    # negative control: the same rows with equal weights are another potential (another anchor loss)
    assert uniform.anchor_loss != pytest.approx(dropped.anchor_loss, rel=1e-6)


def test_a_single_estimate_from_a_calibration_is_redone_by_the_series_rule():
    from slt_tms.estimators import Calibration

    X, Y = _regression(300, seed=1)
    best = _fitted(X, Y)
    kw = {"loss": "mse", "sampler": "mala", "localization": 10.0, "num_burnin": 60, "max_draws": 100,
          "target_ess": 10_000, "progress": False}  # every run ends "not converged"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        source = estimate_llc(best, (X, Y), seed=11, **kw)
        cal = source.calibration
        assert cal is not None and cal.converged is False  # the source did not converge either
        assert Calibration.from_dict(cal.to_dict()).converged is False
        kept = estimate_llc(best, (X, Y), seed=4, calibration=cal, **kw)
        as_converged = dataclasses.replace(cal, converged=True)
        redone = estimate_llc(best, (X, Y), seed=4, calibration=as_converged, **kw)
        own = estimate_llc(best, (X, Y), seed=4, **kw)
    # a calibration from an unconverged run: the run is reported as it ends
    first = kept.config["calibration_used"]
    assert "retried" not in first and first["warmup"] == 20 and not first["refreshed"]
    # from a converged one: run again with its own warmup; the result is the estimate without the calibration
    used = redone.config["calibration_used"]
    assert used["retried"]["llc"] == pytest.approx(kept.llc, rel=1e-9) and used["warmup"] == 60
    assert redone.llc == pytest.approx(own.llc, rel=1e-9) and redone.flags == own.flags
    assert redone.num_grads == own.num_grads + kept.num_grads
