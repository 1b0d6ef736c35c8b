"""Multilayer perceptrons take the batched path (slt_tms.potentials.sequential): its losses and gradients
equal plain autograd through the module, for every loss, data layout and parameter selection; models it
cannot express keep the generic path."""

from __future__ import annotations

import pytest
import torch
from _autograd import autograd_loss_and_grad
from torch import nn
from torch.nn import functional as F

from slt_tms.potentials import from_module
from slt_tms.potentials.base import Batch
from slt_tms.potentials.sequential import DIFFERENTIATED, mlp_layers, mlp_value_and_grad

G = torch.Generator().manual_seed(3)


def _mlp(act: nn.Module, out: int = 2, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 6), act, nn.Sequential(nn.Linear(6, 5, bias=bias), nn.Dropout(0.3)), nn.Tanh(),
        nn.Linear(5, out),
    ).double().eval()  # sampled in eval mode: the reference's dropout is off too


def _rows(n: int = 30, out: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, generator=G, dtype=torch.float64)
    return x, torch.randn(n, out, generator=G, dtype=torch.float64)


def _points(pot, chains: int = 3) -> torch.Tensor:
    return pot.w_star + 0.2 * torch.randn(chains, pot.d, generator=G, dtype=torch.float64)


def _check(pot, net, X, Y, **ref_kw):
    w = _points(pot)
    loss, grad = pot.value_and_grad(w, pot.data.full())
    no_grad = pot.loss(w, pot.data.full())
    idx = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [9, 2, 8, 1]])
    loss_c, grad_c = pot.value_and_grad(w, pot.data.take(idx))
    weights = ref_kw.pop("weights", None)
    for k in range(3):
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X, Y, weights=weights, **ref_kw)
        torch.testing.assert_close(loss[k], ref_l)
        torch.testing.assert_close(no_grad[k], ref_l)
        torch.testing.assert_close(grad[k], ref_g)
        wk = None if weights is None else weights[idx[k]]
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X[idx[k]], Y[idx[k]], weights=wk, **ref_kw)
        if weights is not None:  # a minibatch of a weighted loss is scaled by the full data's mean weight
            ref_l, ref_g = ref_l * wk.mean() / weights.mean(), ref_g * wk.mean() / weights.mean()
        torch.testing.assert_close(loss_c[k], ref_l)
        torch.testing.assert_close(grad_c[k], ref_g)


@pytest.mark.parametrize(
    "act",
    [nn.ReLU(), nn.GELU(), nn.LeakyReLU(0.1), nn.Softplus(), nn.SiLU(), nn.Sigmoid(), nn.ReLU(inplace=True)],
)
def test_mse_losses_and_gradients_equal_autograd_for_shared_and_per_chain_rows(act):
    """Activations with a written-out derivative take the hand-written reverse pass (manual_gradient),
    the others autograd of the batched loss; both equal autograd through the module."""
    net, (X, Y) = _mlp(act), _rows()
    pot = from_module(net, (X, Y), loss="mse")
    assert pot.info["batched_perceptron"] and pot.grad_mode == "autograd"
    assert pot.info["manual_gradient"] == (type(act) in DIFFERENTIATED)
    _check(pot, net, X, Y)
    assert pot.anchor_loss() == pytest.approx(float(F.mse_loss(net(X), Y).detach()), rel=1e-12)


def test_cross_entropy_with_labels_and_with_class_probabilities():
    net = _mlp(nn.ReLU(), out=4)
    X = torch.randn(30, 3, generator=G, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,), generator=G)
    pot = from_module(net, (X, labels), loss="cross_entropy")
    assert pot.info["batched_perceptron"] and pot.info["manual_gradient"]
    _check(pot, net, X, labels, loss_fn=F.cross_entropy)
    ignored = labels.clone()
    ignored[::4] = -100  # torch's ignore_index: no loss, no gradient, still counted in the mean's rows
    w = _points(pot)
    loss, grad = pot.value_and_grad(w, Batch((X, ignored), False))
    ref_fn = lambda p, y: F.cross_entropy(p, y, reduction="none").mean()  # noqa: E731
    for k in range(3):
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X, ignored, loss_fn=ref_fn)
        torch.testing.assert_close(loss[k], ref_l)
        torch.testing.assert_close(grad[k], ref_g)
    probs = torch.softmax(torch.randn(30, 4, generator=G, dtype=torch.float64), dim=1)
    pot = from_module(net, (X, probs), loss="cross_entropy")
    assert pot.info["batched_perceptron"] and pot.info["manual_gradient"]
    _check(pot, net, X, probs, loss_fn=F.cross_entropy)


def test_sample_weights_autoencoder_rows_and_layers_without_bias():
    net, (X, Y) = _mlp(nn.Tanh(), bias=False), _rows()
    s = torch.rand(30, generator=G, dtype=torch.float64) + 0.5
    pot = from_module(net, (X, Y, s), loss="mse")
    assert pot.info["batched_perceptron"] and pot.info["manual_gradient"]
    _check(pot, net, X, Y, weights=s)
    torch.manual_seed(1)
    auto = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 3)).double()
    pot = from_module(auto, (X,), loss="mse")
    assert pot.info["batched_perceptron"]
    _check(pot, auto, X, X)


def test_restricted_parameters_and_element_masks():
    net, (X, Y) = _mlp(nn.ReLU()), _rows()
    names = ["2.0.weight", "4.bias"]
    pot = from_module(net, (X, Y), loss="mse", params=["2.0.weight", "4.bias"])
    assert pot.info["batched_perceptron"] and pot.info["manual_gradient"] and pot.d == 30 + 2
    _check(pot, net, X, Y, names=names)
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[1:3] = True
    masked = from_module(net, (X, Y), loss="mse", masks={"2.0.weight": mask})
    w = masked.w_star + 0.1 * torch.randn(2, masked.d, generator=G, dtype=torch.float64)
    loss, grad = masked.value_and_grad(w, masked.data.full())
    full = from_module(net, (X, Y), loss="mse")
    wf = full.w_star.repeat(2, 1)
    sel = torch.ones(full.d, dtype=torch.bool)  # unmasked parameters are sampled whole
    start = sum(p.numel() for k, p in net.named_parameters() if k in ("0.weight", "0.bias"))
    sel[start : start + 30] = mask.reshape(-1)
    assert masked.d == int(sel.sum())
    wf[:, sel] = w
    ref_l, ref_g = full.value_and_grad(wf, full.data.full())
    torch.testing.assert_close(loss, ref_l)
    torch.testing.assert_close(grad, ref_g[:, sel])


class _MyLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2.0


def test_models_the_batched_path_cannot_express_keep_the_generic_path():
    X, Y = _rows()
    torch.manual_seed(0)
    cases = {
        "a subclass of nn.Linear": nn.Sequential(_MyLinear(3, 2)).double(),
        "an activation first": nn.Sequential(nn.Tanh(), nn.Linear(3, 2)).double(),
        "a non-elementwise module": nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double(),
    }
    hooked = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    hooked[1].register_forward_hook(lambda mod, inp, out: out * 0.5)
    cases["a forward hook"] = hooked
    for why, net in cases.items():
        pot = from_module(net, (X, Y), loss="mse")
        assert not pot.info["batched_perceptron"], why
        assert pot.grad_mode == "vmap", why
        _check(pot, net, X, Y)
    net = _mlp(nn.ReLU())
    assert not from_module(net, (X, Y), loss=lambda p, y: F.l1_loss(p, y)).info["batched_perceptron"]
    assert mlp_layers(net) is not None
    seq = torch.randn(30, 4, 3, generator=G, dtype=torch.float64)  # (m, T, p): Linear on the last axis
    pot = from_module(net, (seq, torch.randn(30, 4, 2, generator=G, dtype=torch.float64)), loss="mse")
    assert not pot.info["batched_perceptron"]


@pytest.mark.filterwarnings("ignore:LLC estimate")  # a short run at a random point: flagged, as it should be
def test_the_batched_path_gives_the_generic_paths_estimate_to_float_rounding():
    """The same seed, the same chains: the two paths differ by float rounding only (float64 here)."""
    from slt_tms.estimators import estimate_llc

    net, (X, Y) = _mlp(nn.ReLU()), _rows(200)
    kw = {"num_chains": 2, "num_burnin": 20, "num_draws": 30, "seed": 4, "progress": False}
    a = estimate_llc(net, (X, Y), loss="mse", **kw)
    generic = estimate_llc(net, (X, Y), loss=lambda p, y: (p - y).square().mean(), **kw)
    assert a.config is not None and generic.config is not None
    assert a.llc == pytest.approx(generic.llc, rel=1e-6)


def test_the_hand_written_pass_is_checked_against_autograd_and_a_wrong_one_is_not_used(monkeypatch):
    """A hand-written pass that is off (here by 0.1% in every component) disagrees with autograd on the
    probe rows: from_module then keeps autograd (manual_gradient False) and the gradients stay right."""
    import slt_tms.potentials.module as module

    def wrong(*args, **kwargs):
        right = mlp_value_and_grad(*args, **kwargs)

        def vg(w, rows):
            val, grad = right(w, rows)
            return val, grad * 1.001
        return vg

    monkeypatch.setattr(module, "mlp_value_and_grad", wrong)
    net, (X, Y) = _mlp(nn.ReLU()), _rows()
    pot = from_module(net, (X, Y), loss="mse")
    assert pot.info["batched_perceptron"] and not pot.info["manual_gradient"]
    _check(pot, net, X, Y)


def test_dropout_in_training_mode_has_no_hand_written_pass():
    net = _mlp(nn.ReLU()).train()
    assert mlp_value_and_grad(mlp_layers(net), [k for k, _ in net.named_parameters()], {}, "mse") is None
