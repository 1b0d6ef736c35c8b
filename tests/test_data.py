"""Input distributions (statistics within Monte-Carlo error), fixed datasets, the weighted loss."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slt_tms.tms.data import OneHotUniform, SparseUniform, fixed_dataset, geometric_importance
from slt_tms.tms.losses import empirical_loss, weighted_sq_error
from slt_tms.tms.model import ACTIVATIONS, TMS, num_params, pack

FAST = settings(max_examples=25, deadline=None)
K_SE = 5.0  # two-sided 5-sigma bands: false-alarm rate ~6e-7 per check, so a few dozen checks never flake


def _mc_check(samples: np.ndarray, truth: float, k: float = K_SE) -> tuple[float, float, bool]:
    """Mean of i.i.d. ``samples`` vs ``truth``: (estimate, standard error, |est - truth| < k SE)."""
    est = float(samples.mean())
    se = float(samples.std(ddof=1) / np.sqrt(samples.size))
    return est, se, abs(est - truth) < k * se


def _statistics(x: torch.Tensor) -> dict[str, np.ndarray]:
    a = x.double().numpy()
    return {"nonzero": (a != 0).astype(float), "mean": a, "second": a**2}


# --------------------------------------------------------------------------------------- OneHotUniform
@pytest.mark.parametrize("c", [1, 3, 6])
def test_onehot_statistics(c):
    n = 40_000
    x = OneHotUniform(c).sample(n, torch.Generator().manual_seed(c))
    assert x.shape == (n, c) and x.dtype == torch.get_default_dtype()
    # exactly one coordinate is nonzero: mu ~ U[0,1) is exactly 0 only with probability 2^-24 (float32
    # grid), so at most one nonzero per row always, and all-zero rows are (essentially) absent
    nnz = (x != 0).sum(1)
    assert int(nnz.max()) == 1
    assert int((nnz == 0).sum()) <= 2  # expected count n * 2^-24 ~ 0.002
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    stats = _statistics(x)
    truths = {"nonzero": 1.0 / c, "mean": 1.0 / (2 * c), "second": 1.0 / (3 * c)}
    for name, truth in truths.items():
        for i in range(c):
            est, se, ok = _mc_check(stats[name][:, i], truth)
            if c == 1 and name == "nonzero":  # degenerate: P = 1 exactly, zero variance
                assert est == pytest.approx(1.0, abs=1e-4)
                continue
            assert ok, f"c={c} {name}[{i}]: {est:.5f} vs {truth:.5f} (SE {se:.2e})"


def test_onehot_negative_control():
    """The same test must reject a distribution with the wrong statistics (here c + 1 features)."""
    c, n = 4, 40_000
    x = OneHotUniform(c + 1).sample(n, torch.Generator().manual_seed(0))[:, :c]
    rejected = [not _mc_check(_statistics(x)["nonzero"][:, i], 1.0 / c)[2] for i in range(c)]
    assert all(rejected)  # 1/4 vs 1/5: a 0.05 shift vs SE ~0.002, i.e. ~25 SE


# --------------------------------------------------------------------------------------- SparseUniform
@pytest.mark.parametrize("S", [0.0, 0.5, 0.9])
def test_sparse_statistics(S):
    c, n = 5, 40_000
    x = SparseUniform(c, S).sample(n, torch.Generator().manual_seed(int(10 * S)))
    assert x.shape == (n, c)
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    stats = _statistics(x)
    # P(x_i != 0) = (1 - S) * P(U != 0) = (1 - S)(1 - 2^-24): the 2^-24 bias is ~1e-8 << SE ~ 2e-3
    truths = {"nonzero": 1 - S, "mean": (1 - S) / 2, "second": (1 - S) / 3}
    for name, truth in truths.items():
        for i in range(c):
            est, se, ok = _mc_check(stats[name][:, i], truth)
            if S == 0.0 and name == "nonzero":  # zero variance
                assert est == pytest.approx(1.0, abs=1e-4)
                continue
            assert ok, f"S={S} {name}[{i}]: {est:.5f} vs {truth:.5f} (SE {se:.2e})"
    # coordinates independent: the empirical correlation of the on/off indicators is within 5 SE of 0
    if 0 < S:
        on = stats["nonzero"]
        prod = on[:, 0] * on[:, 1]
        assert _mc_check(prod, (1 - S) ** 2)[2]


def test_sparse_negative_control():
    c, n, S = 5, 40_000, 0.5
    x = SparseUniform(c, S + 0.05).sample(n, torch.Generator().manual_seed(0))
    rejected = [not _mc_check(_statistics(x)["nonzero"][:, i], 1 - S)[2] for i in range(c)]
    assert all(rejected)  # 0.05 shift vs SE ~0.0025: ~20 SE


def test_sampling_is_reproducible_and_explicit():
    for dist in (OneHotUniform(4), SparseUniform(4, 0.3)):
        a = dist.sample(100, torch.Generator().manual_seed(7))
        b = dist.sample(100, torch.Generator().manual_seed(7))
        c = dist.sample(100, torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    a = OneHotUniform(4).sample(10, 3)
    torch.manual_seed(1)  # the global RNG must not matter
    assert torch.equal(a, OneHotUniform(4).sample(10, 3))


def test_fixed_dataset():
    d1 = fixed_dataset(SparseUniform(3, 0.2), 50, seed=1)
    assert d1.shape == (50, 3)
    assert torch.equal(d1, fixed_dataset(SparseUniform(3, 0.2), 50, seed=1))
    assert not torch.equal(d1, fixed_dataset(SparseUniform(3, 0.2), 50, seed=2))


def test_geometric_importance():
    torch.testing.assert_close(geometric_importance(4, 0.9), torch.tensor([1.0, 0.9, 0.81, 0.729]))


# --------------------------------------------------------------------------------------- validation
@given(S=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(float("nan")),
                   st.booleans(), st.text(max_size=2)))
@FAST
def test_invalid_sparsity(S):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        SparseUniform(3, S)


@given(n=st.one_of(st.integers(max_value=0), st.floats(), st.booleans()))
@FAST
def test_invalid_n(n):
    with pytest.raises(ValueError, match="positive integer"):
        OneHotUniform(3).sample(n)
    with pytest.raises(ValueError, match="positive integer"):
        fixed_dataset(SparseUniform(3, 0.5), n)


@given(c=st.one_of(st.integers(max_value=0), st.floats(), st.none()))
@FAST
def test_invalid_c(c):
    with pytest.raises(ValueError, match="integer >= 1"):
        OneHotUniform(c)
    with pytest.raises(ValueError, match="integer >= 1"):
        SparseUniform(c, 0.5)


def test_invalid_importance():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        SparseUniform(3, 0.5, torch.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        SparseUniform(3, 0.5, torch.tensor([1.0, -1.0, 1.0]))


# --------------------------------------------------------------------------------------- loss invariants
def _random_setup(seed: int, c: int, r: int, activation: str):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(num_params(c, r), generator=g, dtype=torch.float64)
    x = SparseUniform(c, 0.5).sample(16, g).double()
    # float32-representable weights: data._check_importance casts importance to the default dtype
    imp = (torch.rand(c, generator=g) + 0.1).double()
    return w, x, imp


@pytest.mark.parametrize("activation", ACTIVATIONS)
@given(seed=st.integers(0, 10_000), c=st.integers(1, 6), r=st.integers(1, 3))
@FAST
def test_loss_nonnegative_and_matches_definition(activation, seed, c, r):
    w, x, imp = _random_setup(seed, c, r, activation)
    loss = empirical_loss(w, x, c, r, activation, 2.0, imp)
    assert float(loss) >= 0.0
    f = TMS.from_flat(w.float(), c, r, activation, 2.0).double().load_flat(w)(x)
    ref = ((imp * (x - f) ** 2).sum(1)).mean()  # (1/n) sum_k sum_i I_i (x_ki - f_ki)^2, not halved
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-14)


@given(seed=st.integers(0, 10_000), c=st.integers(1, 5))
@FAST
def test_loss_zero_iff_reconstruction(seed, c):
    g = torch.Generator().manual_seed(seed)
    x = SparseUniform(c, 0.3).sample(20, g).double()
    # W = I (r = c), b = 0: f(x) = relu(x) = x for x >= 0 -> loss exactly 0
    w_id = pack(torch.eye(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64))
    assert float(empirical_loss(w_id, x, c, c)) == 0.0
    # any w with f(x) != x on some sample has positive loss (all importances positive)
    w = w_id + 0.1 * torch.randn(w_id.shape, generator=g, dtype=torch.float64)
    f = TMS(c, c).double().load_flat(w)(x)
    assert (float(empirical_loss(w, x, c, c)) > 0.0) == bool((f != x).any())


@given(seed=st.integers(0, 10_000), c=st.integers(2, 6), r=st.integers(1, 3),
       activation=st.sampled_from(ACTIVATIONS))
@FAST
def test_loss_permutation_equivariance(seed, c, r, activation):
    """Relabelling features (columns of W, entries of b, importance, data columns) leaves L unchanged."""
    w, x, imp = _random_setup(seed, c, r, activation)
    W, b = w[: r * c].reshape(r, c), w[r * c :]
    perm = torch.randperm(c, generator=torch.Generator().manual_seed(seed))
    w_p = pack(W[:, perm], b[perm])
    base = empirical_loss(w, x, c, r, activation, 3.0, imp)
    permuted = empirical_loss(w_p, x[:, perm], c, r, activation, 3.0, imp[perm])
    torch.testing.assert_close(permuted, base, rtol=1e-12, atol=1e-14)
    # the model output is permuted the same way (equivariance of f, not just invariance of L)
    f = TMS(c, r, activation, 3.0).double().load_flat(w)(x)
    f_p = TMS(c, r, activation, 3.0).double().load_flat(w_p)(x[:, perm])
    torch.testing.assert_close(f_p, f[:, perm], rtol=1e-12, atol=1e-14)


def test_loss_rotation_invariance():
    """An orthogonal map of the hidden space (W -> Q W) leaves W^T W, hence f and L, unchanged."""
    c, r = 5, 2
    w, x, imp = _random_setup(3, c, r, "relu")
    W, b = w[: r * c].reshape(r, c), w[r * c :]
    t = torch.tensor(0.7, dtype=torch.float64)
    Q = torch.stack([torch.stack([t.cos(), -t.sin()]), torch.stack([t.sin(), t.cos()])])
    torch.testing.assert_close(empirical_loss(pack(Q @ W, b), x, c, r, importance=imp),
                               empirical_loss(w, x, c, r, importance=imp), rtol=1e-12, atol=1e-14)


def test_weighted_sq_error_batched_and_rejects_width_mismatch():
    pred = torch.zeros(2, 3, 4)
    x = torch.ones(3, 4)
    torch.testing.assert_close(weighted_sq_error(pred, x), torch.full((2,), 4.0))
    with pytest.raises(ValueError, match="widths differ"):
        weighted_sq_error(torch.zeros(3, 5), x)
