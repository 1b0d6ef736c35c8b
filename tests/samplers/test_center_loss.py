"""The control variate's L_B(w*) from a table of per-row losses (slt_tms.samplers.CenterLoss): equal to the
loss of the batch computed directly with torch.nn.functional, for every named loss, sample weights and
parameter selections; never used where the batch loss is not a mean of per-row terms; and an estimate
that uses it is the estimate that runs a forward pass per step."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from slt_tms.estimators import estimate_llc
from slt_tms.potentials import from_module
from slt_tms.samplers import BatchSupply, CenterLoss, Draws, Tempered
from slt_tms.samplers import base as samplers_base

G = torch.Generator().manual_seed(11)
N = 300


def _net(out: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, out)).double().eval()


def _draws(pot, chains: int, m: int) -> Draws:
    idx = torch.randint(0, N, (chains, m), generator=G)
    return Draws(torch.zeros(chains, pot.d, dtype=torch.float64), torch.zeros(chains, 2), idx)


def _lookups(pot, chains: int = 3, m: int = 7, rounds: int = 4):
    target = Tempered(pot, nbeta=10.0, localization=1.0, center=pot.w_star)
    supply = BatchSupply(pot.data, batch_size=m)
    cl = CenterLoss(target, supply, chains, steps=1000)
    out = []
    for _ in range(rounds):
        dr = _draws(pot, chains, m)
        out.append((cl(supply(dr), dr), dr.index))
    assert cl.tabulated, "the table failed its check against the forward pass"
    return cl, out


def _mse_ref(net, X, Y, idx, s=None):
    with torch.no_grad():
        rows = [F.mse_loss(net(X[i]), Y[i], reduction="none").mean(1) for i in idx]
    if s is None:
        return torch.stack([r.mean() for r in rows])
    return torch.stack([(r * s[i]).mean() / s.mean() for r, i in zip(rows, idx, strict=True)])


def test_lookup_equals_the_batch_loss_for_mse_and_sample_weights():
    net = _net()
    X = torch.randn(N, 3, generator=G, dtype=torch.float64)
    Y = torch.randn(N, 2, generator=G, dtype=torch.float64)
    s = torch.rand(N, generator=G, dtype=torch.float64) + 0.5
    for data, weights in (((X, Y), None), ((X, Y, s), s)):
        cl, out = _lookups(from_module(net, data, loss="mse"))
        assert cl.tabulated
        for value, idx in out:
            torch.testing.assert_close(value, _mse_ref(net, X, Y, idx, weights), rtol=1e-10, atol=0)


def test_lookup_equals_the_batch_loss_for_cross_entropy_labels():
    net = _net(out=4)
    X = torch.randn(N, 3, generator=G, dtype=torch.float64)
    y = torch.randint(0, 4, (N,), generator=G)
    cl, out = _lookups(from_module(net, (X, y), loss="cross_entropy"))
    assert cl.tabulated
    for value, idx in out:
        with torch.no_grad():
            ref = torch.stack([F.cross_entropy(net(X[i]), y[i]) for i in idx])
        torch.testing.assert_close(value, ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("restriction", [{"params": ["2.*"]}, {"masks": "first-layer"}])
def test_lookup_follows_restricted_potentials(restriction):
    net = _net()
    X = torch.randn(N, 3, generator=G, dtype=torch.float64)
    Y = torch.randn(N, 2, generator=G, dtype=torch.float64)
    if "masks" in restriction:
        restriction = {"masks": {"0.weight": torch.rand(8, 3, generator=G) < 0.5}}
    cl, out = _lookups(from_module(net, (X, Y), loss="mse", **restriction))
    assert cl.tabulated
    for value, idx in out:
        torch.testing.assert_close(value, _mse_ref(net, X, Y, idx), rtol=1e-10, atol=0)


def test_chains_around_different_centers_and_a_selection_of_chains():
    net = _net()
    X = torch.randn(N, 3, generator=G, dtype=torch.float64)
    Y = torch.randn(N, 2, generator=G, dtype=torch.float64)
    pot = from_module(net, (X, Y), loss="mse")
    other = pot.w_star + 0.3 * torch.randn(pot.d, generator=G, dtype=torch.float64)
    centers = torch.stack([pot.w_star, other, pot.w_star, other])
    target = Tempered(pot, nbeta=10.0, localization=1.0, center=centers)
    supply = BatchSupply(pot.data, batch_size=5)
    cl = CenterLoss(target, supply, 4, steps=1000)
    assert cl.tabulated and cl.table.shape == (2, N)
    dr = _draws(pot, 4, 5)
    batch = supply(dr)
    torch.testing.assert_close(cl(batch, dr), pot.loss(centers, batch), rtol=1e-10, atol=0)
    sub = cl.select(torch.tensor([1, 2]))
    dr2 = Draws(dr.normal[[1, 2]], dr.uniform[[1, 2]], dr.index[[1, 2]])
    torch.testing.assert_close(sub(supply(dr2), dr2), pot.loss(centers[[1, 2]], supply(dr2)), rtol=1e-10,
                               atol=0)


class _BatchCentered(nn.Module):
    """Rows interact within a batch (inputs centred on the batch mean): no per-row table can give its
    batch loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x - x.mean(-2, keepdim=True))


def test_a_batch_loss_that_is_not_a_row_mean_falls_back_to_the_forward_pass():
    net = _BatchCentered().double()
    X = torch.randn(N, 3, generator=G, dtype=torch.float64) + 2.0
    Y = torch.randn(N, 2, generator=G, dtype=torch.float64)
    pot = from_module(net, (X, Y), loss="mse")
    target = Tempered(pot, nbeta=10.0, localization=1.0, center=pot.w_star)
    supply = BatchSupply(pot.data, batch_size=6)
    cl = CenterLoss(target, supply, 2, steps=1000)
    assert cl.tabulated  # built, then refused by the check on its first lookup
    dr = _draws(pot, 2, 6)
    batch = supply(dr)
    torch.testing.assert_close(cl(batch, dr), pot.loss(pot.w_star.expand(2, -1), batch))
    assert not cl.tabulated


def test_no_table_without_per_row_terms_or_where_it_does_not_pay():
    net = _net()
    X = torch.randn(N, 3, generator=G, dtype=torch.float64)
    Y = torch.randn(N, 2, generator=G, dtype=torch.float64)
    callable_loss = from_module(net, (X, Y), loss=lambda p, y: F.mse_loss(p, y))
    named = from_module(net, (X, Y), loss="mse")
    for pot, batch_size, steps in ((callable_loss, 5, 1000), (named, None, 1000), (named, 5, 2)):
        target = Tempered(pot, nbeta=10.0, localization=1.0, center=pot.w_star)
        assert not CenterLoss(target, BatchSupply(pot.data, batch_size), 3, steps).tabulated


def test_no_table_beyond_its_memory_bound(monkeypatch):
    net = _net()
    X = torch.randn(N, 3, generator=G, dtype=torch.float64)
    pot = from_module(net, (X, torch.randn(N, 2, generator=G, dtype=torch.float64)), loss="mse")
    target = Tempered(pot, nbeta=10.0, localization=1.0, center=pot.w_star)
    assert CenterLoss(target, BatchSupply(pot.data, 5), 3, 1000).tabulated
    monkeypatch.setattr(samplers_base, "_TABLE_MAX_ELEMENTS", N - 1)
    assert not CenterLoss(target, BatchSupply(pot.data, 5), 3, 1000).tabulated


def test_an_estimate_with_the_table_is_the_estimate_with_a_forward_pass_per_step(monkeypatch):
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
    X = torch.randn(400, 3, generator=G)
    Y = net(X).detach() + 0.1 * torch.randn(400, 1, generator=G)
    kw = {"loss": "mse", "batch_size": 16, "num_draws": 300, "num_burnin": 100, "num_chains": 2,
          "seed": 4, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = estimate_llc(net, (X, Y), **kw)
        monkeypatch.setattr(samplers_base, "_TABLE_CHUNK", 10**9)  # (still tabulated: one chunk)
        one_chunk = estimate_llc(net, (X, Y), **kw)
        original = CenterLoss.__init__

        def no_table(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.table = None

        monkeypatch.setattr(CenterLoss, "__init__", no_table)
        forward = estimate_llc(net, (X, Y), **kw)
    assert table.llc == pytest.approx(forward.llc, rel=1e-5, abs=1e-4)
    difference = forward.bias_check["difference"]
    assert table.bias_check["difference"] == pytest.approx(difference, rel=1e-4, abs=1e-4)
    assert one_chunk.llc == pytest.approx(table.llc, rel=1e-6, abs=1e-5)
