"""Tests of the population-loss ladder, the datasets of a ladder and the dataset bootstrap of switch
points (slt_tms.experiments.posterior, slt_tms.analysis.switch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import slt_tms.experiments.posterior as post
from slt_tms.analysis.kgon_classify import UNCLASSIFIED
from slt_tms.analysis.switch import switch_point
from slt_tms.theory.symbolic import population_loss_flat
from slt_tms.tms import OneHotSums, empirical_loss

#: Two short chains with few leapfrog steps, no progress bar (each test adds draws, warm-up and seed).
_TINY = {"num_chains": 2, "config": post.HMCConfig(num_leapfrog=4), "progress": False}


# --- 1. the population-loss ladder ------------------------------------------------------------------------
def _energy_under(target, chain: int, state: torch.Tensor) -> torch.Tensor:
    """The energy U of ``state (d,)`` under the target of chain ``chain`` of a batched target."""
    return target.select(torch.tensor([chain])).energy(state[None], None)[0][0]


def test_population_swap_ratio_is_the_metropolis_ratio_of_the_sampled_targets():
    """Against the energies of the very target the ladder samples (chains replica-set major, rung g of
    set k at chain k * G + g): the log of p_g(w_hi) p_{g+1}(w_lo) / (p_g(w_lo) p_{g+1}(w_hi))."""
    c, r, K = 5, 2, 2
    ladder = torch.tensor([30.0, 39.0, 51.0, 66.0], dtype=torch.float64)
    G = ladder.numel()
    w = torch.randn(K * G, 3 * c, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    target = post.population_target(c, r, ladder.repeat(K), w)
    # the target is n_g L(w) + |w|^2 / 2 with the closed-form population loss
    want_u = ladder.repeat(K) * population_loss_flat(w, c, r) + 0.5 * (w * w).sum(-1)
    torch.testing.assert_close(target.energy(w, None)[0], want_u, rtol=1e-12, atol=1e-12)
    for k in range(K):
        for g in range(G - 1):
            lo, hi = k * G + g, k * G + g + 1
            want = (
                _energy_under(target, lo, w[lo]) + _energy_under(target, hi, w[hi])
                - _energy_under(target, lo, w[hi]) - _energy_under(target, hi, w[lo])
            )
            g_t = torch.tensor([g])
            got = post.population_swap_log_ratio(ladder, g_t, w[lo : lo + 1], w[hi : hi + 1], c, r)
            torch.testing.assert_close(got, want.reshape(1), rtol=1e-10, atol=1e-9)
    # the sign: a higher-loss state at the larger n is moved down with probability 1
    w_good, w_bad = torch.zeros(1, 3 * c, dtype=torch.float64), w[1:2]
    assert population_loss_flat(w_bad, c, r) > population_loss_flat(w_good, c, r)
    assert post.population_swap_log_ratio(ladder, torch.tensor([0]), w_good, w_bad, c, r) > 0


def test_empirical_swap_ratio_is_the_metropolis_ratio_of_the_sampled_targets():
    """The same for the data posterior, against the ladder's own target on the ladder's datasets: its
    energies are n_g L_{n_g}(w) + |w|^2 / 2 on the first n_g rows, and both swap ratios share one sign
    convention."""
    c, r, K, ladder = 4, 2, 2, [20, 26, 34]
    G = len(ladder)
    X = post.ladder_datasets(c, ladder[-1], K, seed=3)
    sums = OneHotSums(X, ladder)
    kk, hh = torch.arange(K).repeat_interleave(G), torch.arange(G).repeat(K)
    w = torch.randn(K * G, 3 * c, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    target = post._target(sums, kk, hh, r, w)

    def U(state: torch.Tensor, chain: int) -> torch.Tensor:
        k, g = divmod(chain, G)
        n_g = ladder[g]
        return n_g * empirical_loss(state[None], X[k, :n_g], c, r)[0] + 0.5 * (state * state).sum()

    want_u = torch.stack([U(w[i], i) for i in range(K * G)])
    torch.testing.assert_close(target.energy(w, None)[0], want_u, rtol=1e-10, atol=1e-9)
    for k in range(K):
        for g in range(G - 1):
            lo, hi = k * G + g, k * G + g + 1
            want = U(w[lo], lo) + U(w[hi], hi) - U(w[hi], lo) - U(w[lo], hi)
            got = post.swap_log_ratio(
                sums, torch.tensor([k]), torch.tensor([g]), w[lo : lo + 1], w[hi : hi + 1], r
            )
            torch.testing.assert_close(got, want.reshape(1), rtol=1e-10, atol=1e-9)


def test_population_ladder_records_and_seeds():
    kw = {**_TINY, "num_draws": 12, "num_warmup": 12, "seed": 4}
    a = post.sample_posterior_ladder(4, [40, 60], loss="population", **kw)
    b = post.sample_posterior_ladder(4, [40, 60], loss="population", **kw)
    assert torch.equal(a.samples, b.samples) and np.array_equal(a.swap_accept, b.swap_accept)
    assert a.config["loss"] == "population" and a.config["dataset"] is None
    # recorded loss = L(w) and potential = n_g L(w) + |w|^2 / 2 of the recorded draw (also after swaps)
    flat = a.samples.reshape(-1, 12)
    L = population_loss_flat(flat, 4, 2).reshape(a.empirical_loss.shape)
    torch.testing.assert_close(a.empirical_loss, L)
    n = torch.tensor(a.ladder, dtype=torch.float64)[None, :, None]
    pot = n * L + 0.5 * (a.samples**2).sum(-1)
    np.testing.assert_allclose(a.potential, pot.numpy(), rtol=1e-10, atol=1e-10)
    # not the empirical posterior's draws
    e = post.sample_posterior_ladder(4, [40, 60], **kw)
    assert e.config["loss"] == "empirical" and not torch.equal(e.samples, a.samples)


# --- 2. the datasets of a ladder -----------------------------------------------------------------------
def test_ladder_datasets_are_the_data_of_the_ladder():
    """Every recorded L_{n_g} and potential of an empirical ladder, at every rung and replica set, is
    recomputed on the first n_g rows of ladder_datasets (a different dataset would not match)."""
    kw = {**_TINY, "num_draws": 6, "num_warmup": 6, "seed": 11}
    lad = post.sample_posterior_ladder(4, [30, 45], **kw)
    X = post.ladder_datasets(4, lad.ladder[-1], 2, seed=11)
    assert X.shape == (2, lad.ladder[-1], 4) and X.dtype == torch.float64
    for k in range(2):
        for g, n in enumerate(lad.ladder):
            want = torch.stack([empirical_loss(w[None], X[k, :n], 4, 2)[0] for w in lad.samples[k, g]])
            torch.testing.assert_close(lad.empirical_loss[k, g], want, rtol=1e-10, atol=1e-12)
            pot = n * want + 0.5 * (lad.samples[k, g] ** 2).sum(-1)
            np.testing.assert_allclose(lad.potential[k, g], pot.numpy(), rtol=1e-10, atol=1e-10)
    other = post.ladder_datasets(4, lad.ladder[-1], 2, seed=12)
    assert not torch.equal(other, X)
    # more replica sets extend the list of datasets; another n_max is other data (documented); dtype casts
    n_max = lad.ladder[-1]
    torch.testing.assert_close(post.ladder_datasets(4, n_max, 3, seed=11)[:2], X)
    assert not torch.equal(post.ladder_datasets(4, 2 * n_max, 2, seed=11)[:, :n_max], X)
    assert torch.equal(post.ladder_datasets(4, 10, 2, seed=11, dtype=torch.float32).double(),
                       post.ladder_datasets(4, 10, 2, seed=11))
    for bad in [{"c": 0}, {"n_max": 0}, {"num_chains": 0}, {"seed": -1}]:
        with pytest.raises(ValueError):
            post.ladder_datasets(**{"c": 4, "n_max": 10, "num_chains": 2, "seed": 0, **bad})


# --- 3. the dataset bootstrap of switch points ----------------------------------------------------------
NAMES = ["a", "b", UNCLASSIFIED]


def test_switch_point_bootstrap_resamples_whole_replica_sets():
    """Set 0 goes a -> b, set 1 b -> a (G = 2, K = 2). Resampling whole sets, a replicate crosses iff it
    picks set 0 twice: P = 1/4 (picking grid points independently would give 3/4 * 1/4 = 3/16). With
    B = 4000 replicates the share crossing has standard error sqrt(p (1 - p) / B) = 0.0068; 3/16 lies
    9 standard errors away."""
    cnt = np.zeros((2, 2, 3), dtype=int)
    cnt[:, 0] = [[10, 0, 0], [0, 10, 0]]
    cnt[:, 1] = [[0, 10, 0], [10, 0, 0]]
    B = 4000
    sw = switch_point([100, 400], cnt, NAMES, "a", "b", num_bootstrap=B, seed=0)
    se = math.sqrt(0.25 * 0.75 / B)
    assert abs(sw.frac_crossing - 0.25) < 4 * se
    assert sw.interval == pytest.approx((200.0, 200.0))  # every crossing replicate is set 0 twice
    assert sw.n_switch is None and sw.position == "above"  # pooled: p_b - p_a = 0, 0
