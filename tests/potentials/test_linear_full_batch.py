"""The sufficient-statistics full batch of purely linear models: equal to autograd of torch's own MSE
through the model on every row, used only where it is exact, and never for minibatches."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _autograd import autograd_loss_and_grad
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_tms.potentials import Batch, from_module
from slt_tms.potentials.linear import linear_layers


def _rows(n: int = 300, p: int = 3, k: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=torch.float64)
    Y = torch.randn(n, k, generator=g, dtype=torch.float64)
    s = torch.rand(n, generator=g, dtype=torch.float64)
    return X, Y, s


CASES = {
    "rrr, no bias": lambda: nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 2, bias=False)),
    "two layers with bias": lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)),
    "one nn.Linear": lambda: nn.Linear(3, 2),
    "nested, identity, four layers": lambda: nn.Sequential(
        nn.Linear(3, 4, bias=False), nn.Identity(),
        nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3, bias=False)), nn.Linear(3, 2),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("weighted", [False, True])
def test_value_and_gradient_equal_autograd_of_torch_mse(case: str, weighted: bool) -> None:
    torch.manual_seed(1)
    net = CASES[case]().double()
    X, Y, s = _rows()
    rows = (X, Y, s) if weighted else (X, Y)
    pot = from_module(net, rows, loss="mse")
    assert pot.info["full_batch"].startswith("sufficient statistics")
    assert "sufficient statistics" in pot.description  # shown in the result's summary
    names = pot.info["parameters"]
    w = pot.w_star + 0.5 * torch.randn(3, pot.d, dtype=torch.float64)
    loss, grad = pot.value_and_grad(w, pot.data.full())
    assert torch.equal(pot.loss(w, pot.data.full()), loss)
    for c in range(3):
        val, g = autograd_loss_and_grad(net, w[c], X, Y, names=names, weights=s if weighted else None)
        torch.testing.assert_close(loss[c], val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[c], g, rtol=1e-10, atol=1e-12)
    anchor, _ = autograd_loss_and_grad(net, pot.w_star, X, Y, names=names, weights=s if weighted else None)
    assert pot.anchor_loss() == pytest.approx(float(anchor), rel=1e-13)


def test_autoencoder_rows_selected_parameters_and_masks() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 3)).double()
    X, _, _ = _rows(k=3)
    pot = from_module(net, (X,), loss="mse", params=["1.*"])
    assert pot.info["full_batch"].startswith("sufficient statistics")
    w = pot.w_star + 0.3 * torch.randn(2, pot.d, dtype=torch.float64)
    loss, grad = pot.value_and_grad(w, pot.data.full())
    for c in range(2):
        val, g = autograd_loss_and_grad(net, w[c], X, X, names=["1.weight", "1.bias"])
        torch.testing.assert_close(loss[c], val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[c], g, rtol=1e-10, atol=1e-12)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 2] = True
    sub = from_module(net, (X,), loss="mse", masks={"0.weight": mask})
    v = sub.w_star + 0.3 * torch.randn(2, sub.d, dtype=torch.float64)
    full_w = sub._full(v)
    loss, grad = sub.value_and_grad(v, sub.data.full())
    names = [k for k, _ in net.named_parameters()]
    for c in range(2):
        val, g = autograd_loss_and_grad(net, full_w[c], X, X, names=names)
        torch.testing.assert_close(loss[c], val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[c], g[sub.index], rtol=1e-10, atol=1e-12)


def test_minibatches_and_copies_of_the_rows_go_through_the_model() -> None:
    """Only the data's own full batch takes the shortcut; per-chain minibatches are the model's loss."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    X, Y, _ = _rows()
    pot = from_module(net, (X, Y), loss="mse")
    idx = torch.randint(0, len(X), (2, 16))
    w = pot.w_star + 0.2 * torch.randn(2, pot.d, dtype=torch.float64)
    loss, grad = pot.value_and_grad(w, pot.data.take(idx))
    for c in range(2):
        val, g = autograd_loss_and_grad(net, w[c], X[idx[c]], Y[idx[c]], names=pot.info["parameters"])
        torch.testing.assert_close(loss[c], val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[c], g, rtol=1e-10, atol=1e-12)
    copied = Batch((X.clone(), Y.clone()), False)
    a, b = pot.value_and_grad(w, copied), pot.value_and_grad(w, pot.data.full())
    torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=1e-10, atol=1e-12)


class _MyLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
        lambda: nn.Sequential(_MyLinear(3, 4), nn.Linear(4, 2)),
        lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)),
    ],
    ids=["relu", "subclass", "dropout"],
)
def test_models_that_are_not_purely_linear_use_the_model(make) -> None:
    net = make().double()
    X, Y, _ = _rows()
    assert linear_layers(net) is None
    assert from_module(net, (X, Y), loss="mse").info["full_batch"] == "model"


def test_hooks_other_losses_loaders_and_wide_inputs_use_the_model() -> None:
    X, Y, _ = _rows()
    hooked = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    hooked[1].register_forward_hook(lambda m, i, o: o * 3.0)
    assert from_module(hooked, (X, Y), loss="mse").info["full_batch"] == "model"
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    assert from_module(net, (X, Y), loss=lambda a, b: F.mse_loss(a, b)).info["full_batch"] == "model"
    labels = torch.randint(0, 2, (len(X),))
    assert from_module(net, (X, labels), loss="cross_entropy").info["full_batch"] == "model"
    loader = DataLoader(TensorDataset(X, Y), batch_size=50)
    assert from_module(net, loader, loss="mse").info["full_batch"] == "model"
    few = from_module(nn.Linear(3, 2).double(), (X[:3], Y[:3]), loss="mse")  # p + 1 >= n rows
    assert few.info["full_batch"] == "model"
    # a hook on the model: the shortcut would skip it, so the hooked model must stay on its own path
    check = from_module(hooked, (X, Y), loss="mse")
    w = check.w_star[None]
    val, _ = autograd_loss_and_grad(hooked, check.w_star, X, Y, names=check.info["parameters"])
    torch.testing.assert_close(check.value_and_grad(w, check.data.full())[0][0], val)


def test_float32_model_keeps_the_loss_differences_of_the_llc() -> None:
    """In float32 the shortcut's L(w) - L(w*) is the float64 value (rounded once), where the model's own
    float32 sums over rows lose digits to cancellation."""
    torch.manual_seed(4)
    net64 = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 3, bias=False)).double()
    X, Y, _ = _rows(n=20_000, k=3)
    pot32 = from_module(copy.deepcopy(net64).float(), (X.float(), Y.float()), loss="mse")
    pot64 = from_module(net64, (X.float().double(), Y.float().double()), loss="mse")
    w = pot64.w_star + 1e-2 * torch.randn(4, pot64.d, dtype=torch.float64)
    exact = pot64.value_and_grad(w, pot64.data.full())[0] - pot64.anchor_loss()
    ours = pot32.value_and_grad(w.float(), pot32.data.full())[0].double() - pot32.anchor_loss()
    # float32 resolves the loss (about 2) to 1.2e-7; the differences are of order 1e-4
    torch.testing.assert_close(ours, exact, rtol=0, atol=5e-7)


@pytest.mark.parametrize(
    ("params", "fast"),
    [
        (["4.*"], True), (["3.*", "4.*"], True), (["4.weight"], True),
        (["0.*"], False), (["1.*", "4.*"], False), (None, False),
    ],
    ids=["last layer", "linear tail", "last weight only", "hidden layer", "batchnorm and last", "everything"],
)
def test_restricted_llc_of_a_linear_tail_uses_the_head_as_fixed_features(params, fast) -> None:
    """An MLP whose last children are nn.Linear: sampling only their parameters makes the rest a fixed
    feature map (eval mode: the BatchNorm's running statistics, no dropout); equal to autograd of
    F.mse_loss through the whole model."""
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4), nn.Linear(4, 2)
    ).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    X, Y, _ = _rows()
    pot = from_module(net, (X, Y), loss="mse", params=params)
    assert pot.info["full_batch"].startswith("sufficient statistics") == fast
    reference = copy.deepcopy(net).eval()
    names = pot.info["parameters"]
    w = pot.w_star + 0.3 * torch.randn(3, pot.d, dtype=torch.float64)
    loss, grad = pot.value_and_grad(w, pot.data.full())
    for c in range(3):
        val, g = autograd_loss_and_grad(reference, w[c], X, Y, names=names)
        torch.testing.assert_close(loss[c], val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad[c], g, rtol=1e-10, atol=1e-12)
    assert net.training  # the caller's module is untouched


def test_restricted_llc_of_the_last_layer_equals_its_gaussian_closed_form() -> None:
    """In its last layer alone, an MLP's MSE loss is quadratic: L(w) - L(w*) = g.D + D'HD/2 with D = w - w*,
    so the localized tempered posterior is Gaussian (precision P = nbeta H + gamma I, mean m = -nbeta P^-1 g)
    and its estimand is exact: nbeta E[L - L*] = nbeta (tr(H P^-1)/2 + m'Hm/2 + g.m). H and g come from
    torch.autograd.functional on the whole model (not from the sufficient statistics); the default
    estimate (exact full batch from the head's features) must agree within 3 SE."""
    from slt_tms.estimators import default_nbeta, estimate_llc

    torch.manual_seed(6)
    n = 2000
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    X = torch.randn(n, 3, dtype=torch.float64)
    with torch.no_grad():
        Y = net(X) + 0.3 * torch.randn(n, 2, dtype=torch.float64)
    shapes = [net[2].weight.shape, net[2].bias.shape]
    w0 = torch.cat([net[2].weight.detach().reshape(-1), net[2].bias.detach()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        weight, bias = w[:16].view(shapes[0]), w[16:].view(shapes[1])
        return F.mse_loss(F.linear(net[1](net[0](X)), weight, bias), Y)

    H = torch.autograd.functional.hessian(loss, w0)
    g = torch.autograd.functional.jacobian(loss, w0)
    nbeta, gamma = default_nbeta(n), 1.0
    P = nbeta * H + gamma * torch.eye(18, dtype=torch.float64)
    m = -nbeta * torch.linalg.solve(P, g)
    exact = float(nbeta * (0.5 * torch.trace(H @ torch.linalg.inv(P)) + 0.5 * m @ H @ m + g @ m))
    res = estimate_llc(net, (X, Y), loss="mse", params=["2.*"], progress=False)
    assert res.converged and res.ok, res.summary()
    assert res.config["potential"]["full_batch"].startswith("sufficient statistics")
    assert abs(res.llc - exact) <= 3 * res.se, (res.summary(), exact)
