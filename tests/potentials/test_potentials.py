"""Potentials: one protocol, every constructor, the batch structures, and clear errors before any sampling."""

from __future__ import annotations

import math

import pytest
import torch
from _autograd import autograd_loss_and_grad
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_tms.potentials import (
    Batch,
    DataSource,
    as_potential,
    from_callable,
    from_critical_point,
    from_module,
    is_potential,
    restrict,
    select_parameters,
    with_grad_mode,
)
from slt_tms.theory import regular_quadratic
from slt_tms.theory.critical_points import kgon
from slt_tms.tms import OneHotUniform, empirical_loss, fixed_dataset


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _data(n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )


def test_module_value_and_grad_equal_autograd_for_shared_and_per_chain_batches():
    net = _net()
    X, Y = _data()
    pot = from_module(net, (X, Y), loss="mse")
    assert is_potential(pot) and pot.n == 40 and pot.w_star.shape == (32,)
    w = pot.w_star + 0.1 * torch.randn(3, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, grad = pot.value_and_grad(w, pot.data.full())
    for k in range(3):
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X, Y)
        torch.testing.assert_close(loss[k], ref_l)
        torch.testing.assert_close(grad[k], ref_g)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    loss_c, grad_c = pot.value_and_grad(w, pot.data.take(idx))
    for k in range(3):
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X[idx[k]], Y[idx[k]])
        torch.testing.assert_close(loss_c[k], ref_l)
        torch.testing.assert_close(grad_c[k], ref_g)
    assert pot.anchor_loss() == pytest.approx(float(nn.functional.mse_loss(net(X), Y).detach()), rel=1e-12)


def test_evaluate_hook_with_dict_batches_equals_the_named_loss():
    net = _net()
    X, Y = _data()

    def evaluate(model, batch):  # devinterp's convention: evaluate(model, batch) -> loss (or (loss, ...))
        return nn.functional.mse_loss(model(batch["x"]), batch["y"]), {"extra": 1}

    a = from_module(net, (X, Y), loss="mse")
    b = from_module(net, {"x": X, "y": Y}, evaluate=evaluate)
    w = a.w_star.expand(2, -1) + 0.01
    la, ga = a.value_and_grad(w, a.data.full())
    lb, gb = b.value_and_grad(w, b.data.full())
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(ga, gb)


def test_sample_weights_are_used_and_extra_tensors_refused():
    net = _net()
    X, Y = _data()
    s = torch.rand(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    pot = from_module(net, (X, Y, s), loss="mse")
    per_row = ((net(X) - Y) ** 2).mean(1).detach()
    assert pot.anchor_loss() == pytest.approx(float((s * per_row).sum() / s.sum()), rel=1e-12)
    with pytest.raises(ValueError, match=r"\(X,\), \(X, Y\) or \(X, Y, sample_weights\)"):
        from_module(net, (X, Y, s, s), loss="mse")
    with pytest.raises(ValueError, match="evaluate="):
        from_module(net, {"x": X, "y": Y}, loss="mse")


def test_bad_inputs_fail_before_sampling_with_a_fix():
    X, Y = _data()
    net = _net()
    with pytest.raises(ValueError, match="would broadcast"):
        from_module(net, (X, Y[:, 0]), loss="mse")  # target (n,) against a prediction (n, 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        from_module(net, (X, torch.tensor([0, 1, 2] * 13 + [0])), loss="cross_entropy")
    broken = _net()
    with torch.no_grad():
        next(broken.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"parameters hold NaN or inf \(.*weight\).*before the training"):
        from_module(broken, (X, Y), loss="mse")
    with pytest.raises(ValueError, match=r"labels must be int64 .*int32\); pass Y.long\(\)"):
        from_module(net, (X, torch.tensor([0, 1] * 20, dtype=torch.int32)), loss="cross_entropy")
    one_logit = nn.Sequential(nn.Linear(3, 1)).double()
    with pytest.raises(ValueError, match=r"class axis of size >= 2.*shape \(40, 1\).*outputs two logits"):
        from_module(one_logit, (X, torch.zeros(40, dtype=torch.long)), loss="cross_entropy")
    with pytest.raises(ValueError, match=r"half precision|float16"):
        from_module(_net().half(), (X.half(), Y.half()), loss="mse")
    with pytest.raises(ValueError, match="bfloat16"):
        from_module(_net(), (X, Y), loss="mse", dtype=torch.bfloat16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            from_module(_net(), (X, Y), loss="mse", device="cuda")
    with pytest.raises(ValueError, match="unknown loss"):
        from_module(_net(), (X, Y), loss="hinge")
    with pytest.raises(ValueError, match="cannot be applied to the inputs"):
        from_module(_net(), (torch.randn(40, 4, dtype=torch.float64), Y), loss="mse")
    with pytest.raises(ValueError, match=r"\(40, 2\) but the targets have \(40, 3\)"):  # the data's rows,
        from_module(_net(), (X, torch.randn(40, 3, dtype=torch.float64)), loss="mse")  # not the probe's 2
    with pytest.raises(ValueError, match=r"inputs are int64.*X\.float\(\)"):
        from_module(_net(), (torch.ones(40, 3, dtype=torch.long), Y), loss="mse")
    with pytest.raises(ValueError, match=r"inputs are uint8.*X\.float\(\) / 255"):
        from_module(_net(), (torch.ones(40, 3, dtype=torch.uint8), Y), loss="mse")
    labels = torch.tensor([0, 1] * 20)
    # class labels under the default loss (integers made floats, as a data file's are for mse): the fix named
    with pytest.raises(ValueError, match=r"numbers in \[0, 1\], class labels: use loss='cross_entropy'"):
        from_module(_net(), (X, labels.double()), loss="mse")
    with pytest.raises(ValueError, match=r"must have shape \(40,\); got \(40, 1\); drop the last axis"):
        from_module(_net(), (X, labels[:, None]), loss="cross_entropy")
    with pytest.raises(ValueError, match=r"probabilities of the logits' shape \(40, 2\); got \(40,\)"):
        from_module(_net(), (X, labels.double()), loss="cross_entropy")

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return {"x": X[i], "y": Y[i]}

    with pytest.raises(ValueError, match=r"got Items; wrap a Dataset in a DataLoader.*evaluate="):
        from_module(_net(), Items(), loss="mse")
    # non-finite data beyond the probe's first rows: named, not blamed on the loss at w*
    Xn, Yi = X.clone(), Y.clone()
    Xn[5, 1], Xn[30, 0], Yi[9, 1] = math.nan, math.nan, math.inf
    with pytest.raises(ValueError, match=r"inputs \(X\) contain NaN in 2 of 40 rows \(the first: row 5\)"):
        from_module(_net(), (Xn, Y), loss="mse")
    with pytest.raises(ValueError, match=r"targets \(Y\) contain infinite values in 1 of 40 rows.*row 9"):
        from_module(_net(), (X, Yi), loss="mse")
    per_row = lambda pred, y: (pred - y).square().sum(-1)  # noqa: E731 (not reduced over the rows)
    for rows in [(X, Y), DataLoader(TensorDataset(X, Y), batch_size=8)]:
        with pytest.raises(ValueError, match=r"must return the mean loss over the batch.*\.mean\(\)"):
            from_module(_net(), rows, loss=per_row)


def test_batchnorm_model_in_train_mode_is_sampled_in_eval_mode_and_left_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2)
    ).double()
    X, Y = _data()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pot = from_module(net, (X, Y), loss="mse")
    w = pot.w_star.expand(2, -1).clone()
    l1, _ = pot.value_and_grad(w, pot.data.full())
    l2, _ = pot.value_and_grad(w, pot.data.full())
    torch.testing.assert_close(l1, l2)  # deterministic: eval mode (dropout off, running statistics)
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert pot.info["mode"] == "eval"
    net.eval()
    assert float(l1[0]) == pytest.approx(float(nn.functional.mse_loss(net(X), Y).detach()), rel=1e-12)


class _OnePassDataset(TensorDataset):
    """Raises when the whole dataset is read a second time: a loader over it must be streamed, not copied."""

    reads = 0

    def __getitem__(self, i: int):
        self.reads += 1
        if self.reads > 2 * len(self):
            raise RuntimeError("the dataset was read to the end twice: it was materialised")
        return super().__getitem__(i)


def test_dataloader_is_streamed_batch_by_batch():
    X, Y = _data(64)
    ds = _OnePassDataset(X, Y)
    loader = DataLoader(ds, batch_size=8, shuffle=False)
    pot = from_module(_net(), loader, loss="mse")
    assert pot.n == 64 and pot.data.streaming
    pot.anchor_loss()  # one full pass
    first = pot.data.next_batch()
    assert isinstance(first, Batch) and not first.per_chain and first.data[0].shape == (8, 3)
    assert ds.reads < 2 * 64


class _Branchy(nn.Module):
    """Python control flow on the input DATA (as HuggingFace models check input_ids for padding): vmap
    can trace it over the parameters with shared rows, not over per-chain rows."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x):
        if bool((x[:, 0] > 100).any()):
            x = torch.zeros_like(x)
        return self.lin(x)


def test_models_branching_on_their_inputs_evaluate_per_chain_batches_chain_by_chain():
    net = _Branchy()
    X, Y = _data()
    pot = from_module(net, (X, Y), loss="mse")
    assert pot.info["grad_mode"] == "vmap" and pot.info["grad_mode_per_chain"] == "loop"
    assert "per-chain" in pot.info["vmap_error"]
    w = pot.w_star + 0.1 * torch.randn(3, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    loss_c, grad_c = pot.value_and_grad(w, pot.data.take(idx))
    no_grad = pot.loss(w, pot.data.take(idx))
    for k in range(3):
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X[idx[k]], Y[idx[k]])
        torch.testing.assert_close(loss_c[k], ref_l)
        torch.testing.assert_close(no_grad[k], ref_l)
        torch.testing.assert_close(grad_c[k], ref_g)
    assert from_module(_Straight(), (X, Y), loss="mse").info["grad_mode_per_chain"] == "vmap"


class _Straight(_Branchy):
    """The same layer without the branch: per-chain batches vmap."""

    def forward(self, x):
        return self.lin(x)


class _Output:
    """A model output object (as a HuggingFace ModelOutput): predictions under .logits."""

    def __init__(self, logits):
        self.logits = logits


class _Wrapped(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return _Output(self.net(x))


def test_model_outputs_loss_objects_and_mapping_batches():
    from collections import UserDict

    net = _net()
    X, Y = _data()
    ref = from_module(net, (X, Y), loss="mse")
    # a model returning an object with .logits, under a named loss
    assert from_module(_Wrapped(net), (X, Y), loss="mse").anchor_loss() == pytest.approx(ref.anchor_loss())
    # evaluate returning an object / a dict with a scalar loss (a ModelOutput of model(..., labels=...))
    for wrap in (lambda v: {"loss": v, "logits": None}, lambda v: type("Out", (), {"loss": v})()):
        pot = from_module(net, {"x": X, "y": Y},
                          evaluate=lambda m, b, wrap=wrap: wrap(nn.functional.mse_loss(m(b["x"]), b["y"])))
        assert pot.anchor_loss() == pytest.approx(ref.anchor_loss())
    with pytest.raises(ValueError, match="scalar 'loss'"):
        from_module(net, {"x": X, "y": Y}, evaluate=lambda m, b: {"logits": m(b["x"])})
    # a Mapping that is not a dict (a tokenizer's BatchEncoding is a UserDict)
    pot = from_module(
        net, UserDict({"x": X, "y": Y}), evaluate=lambda m, b: nn.functional.mse_loss(m(b["x"]), b["y"])
    )
    assert pot.n == 40 and pot.anchor_loss() == pytest.approx(ref.anchor_loss())
    odd = _Wrapped(net)
    odd.forward = lambda x: {"prediction": net(x)}  # neither a tensor nor .logits: say what to do
    with pytest.raises(ValueError, match=r"not a tensor of predictions.*evaluate="):
        from_module(odd, (X, Y), loss="mse")


def test_tensor_dataset_and_tuple_give_the_same_potential():
    X, Y = _data()
    a = from_module(_net(), (X, Y), loss="mse")
    b = from_module(_net(), TensorDataset(X, Y), loss="mse")
    assert a.anchor_loss() == b.anchor_loss()


def test_parameter_selection_and_masks():
    net = _net()
    assert select_parameters(net, ["2.*"]) == ["2.weight", "2.bias"]
    with pytest.raises(ValueError, match="no parameter matches"):
        select_parameters(net, ["9.*"])
    X, Y = _data()
    pot = from_module(net, (X, Y), loss="mse", params=["2.*"])
    assert pot.w_star.shape == (12,)
    torch.testing.assert_close(pot.w_star, torch.cat([net[2].weight.reshape(-1), net[2].bias]).detach())
    mask = {"2.weight": torch.tensor([[True, False, False, False, False], [False] * 5])}
    sub = from_module(net, (X, Y), loss="mse", params=["2.*"], masks=mask)
    assert sub.w_star.shape == (3,)  # one weight element and the two biases
    with pytest.raises(ValueError, match="boolean tensor of shape"):
        from_module(net, (X, Y), loss="mse", params=["2.*"], masks={"2.weight": torch.ones(3)})


def test_restrict_keeps_the_other_coordinates_at_the_anchor():
    pot = from_callable(
        lambda w, rows=None: (w * w * torch.arange(1.0, 4.0).to(w)).sum(-1),
        torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        n=10,
    )
    sub = restrict(pot, torch.tensor([False, True, True]))
    loss, grad = sub.value_and_grad(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    assert float(loss[0]) == 1.0 and grad.tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="selects no parameter"):
        restrict(pot, torch.zeros(3, dtype=torch.bool))


def test_tms_potentials_population_and_closed_form_empirical():
    cp = kgon(6, 6)
    pop = from_critical_point(cp, n=1000)
    assert pop.anchor_loss() == pytest.approx(cp.loss, rel=1e-12)
    x = fixed_dataset(OneHotUniform(6), 500, seed=0).double()
    emp = from_critical_point(cp, x)
    w = emp.w_star.expand(3, -1) + 0.01 * torch.randn(
        3, 18, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    loss, grad = emp.value_and_grad(w, emp.data.full())
    wr = w.clone().requires_grad_(True)
    ref = empirical_loss(wr, x, 6, 2)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, torch.autograd.grad(ref.sum(), wr)[0])
    # one-hot rows take the sorted-prefix-sum path on the full batch; a minibatch and dense rows do not
    assert emp.info["one_hot_sums"]
    loss_b, grad_b = emp.value_and_grad(w, Batch((x[:100],)))
    ref_b = empirical_loss(wr, x[:100], 6, 2)
    torch.testing.assert_close(loss_b, ref_b.detach())
    torch.testing.assert_close(grad_b, torch.autograd.grad(ref_b.sum(), wr)[0])
    dense = from_critical_point(cp, x + 0.1)
    assert not dense.info["one_hot_sums"]
    torch.testing.assert_close(dense.value_and_grad(w, dense.data.full())[0],
                               empirical_loss(w, x + 0.1, 6, 2))


def test_as_potential_dispatch_and_errors():
    assert as_potential(regular_quadratic(3, n=100)).n == 100
    with pytest.raises(ValueError, match="w_star"):
        as_potential(lambda w, rows=None: w.sum(-1))
    with pytest.raises(ValueError, match="needs data"):
        as_potential(_net())
    with pytest.raises(ValueError, match="expected a Potential"):
        as_potential(3)
    src = DataSource((torch.zeros(5, 2),))
    assert src.num_rows == 5 and not src.streaming


def test_a_potential_switched_to_the_chain_loop_gives_the_same_values_and_says_so():
    # with_grad_mode(pot, "loop") (grad_mode= of the estimators, --grad-mode): the chains one by one where
    # vmap falls back to its slow per-sample path (larger transformers on CPU); the values agree with vmap
    # and with plain autograd on the module, and the record (what a result's config stores) follows the path
    X, Y = _data()
    net = _Straight()
    pot = from_module(net, (X, Y), loss="mse")
    loop = with_grad_mode(pot, "loop")
    assert pot.info["grad_mode"] == "vmap" and "grad_mode_requested" not in pot.info
    assert loop.info["grad_mode"] == "loop" and loop.info["grad_mode_per_chain"] == "loop"
    assert loop.info["grad_mode_requested"] == "loop" and with_grad_mode(pot, "auto") is pot
    w = pot.w_star + 0.1 * torch.randn(3, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    for batch in (pot.data.full(), pot.data.take(idx)):
        for a, b in zip(pot.value_and_grad(w, batch), loop.value_and_grad(w, batch), strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(pot.loss(w, batch), loop.loss(w, batch))
    loss_c, grad_c = loop.value_and_grad(w, pot.data.take(idx))
    for k in range(3):
        ref_l, ref_g = autograd_loss_and_grad(net, w[k], X[idx[k]], Y[idx[k]])
        torch.testing.assert_close(loss_c[k], ref_l)
        torch.testing.assert_close(grad_c[k], ref_g)
    # also through a restriction (masks / params): the base potential is switched underneath
    sub = with_grad_mode(restrict(pot, torch.arange(8) < 6), "loop")
    assert sub.base.grad_mode == "loop" and sub.info["grad_mode"] == "loop"
    full, at = pot.data.full(), torch.cat([w[:, :6], pot.w_star[6:].expand(3, -1)], 1)
    torch.testing.assert_close(sub.value_and_grad(w[:, :6], full)[1], pot.value_and_grad(at, full)[1][:, :6])


def test_grad_mode_replaces_the_batched_perceptron_path_with_the_same_numbers():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    X, Y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    auto = from_module(net, (X, Y), loss="mse")
    assert auto.info["batched_perceptron"] and auto.grad_mode == "autograd"
    w = auto.w_star + 0.1 * torch.randn(2, auto.d, generator=torch.Generator().manual_seed(5),
                                        dtype=torch.float64)
    for mode in ("vmap", "loop"):
        pot = with_grad_mode(auto, mode)
        assert pot.grad_mode == mode
        assert not pot.info["batched_perceptron"] and not pot.info["manual_gradient"]
        loss_c, grad_c = pot.value_and_grad(w, pot.data.full())
        for k in range(2):
            ref_l, ref_g = autograd_loss_and_grad(net, w[k], X, Y)
            torch.testing.assert_close(loss_c[k], ref_l)
            torch.testing.assert_close(grad_c[k], ref_g)


class _ParamBranch(nn.Module):
    """Python control flow on a PARAMETER's value: vmap over the chains cannot trace it at all."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x):
        return self.lin(x) if bool(self.lin.weight.sum() > -100) else -self.lin(x)


def test_grad_mode_vmap_still_takes_per_chain_batches_chain_by_chain_where_the_model_reads_its_rows():
    X, Y = _data()
    branchy = with_grad_mode(from_module(_Branchy(), (X, Y), loss="mse"), "vmap")
    assert branchy.info["grad_mode"] == "vmap" and branchy.info["grad_mode_per_chain"] == "loop"
    straight = with_grad_mode(from_module(_Straight(), (X, Y), loss="mse"), "vmap")
    assert straight.info["grad_mode_per_chain"] == "vmap"
    g = torch.Generator().manual_seed(6)
    w = branchy.w_star + 0.1 * torch.randn(3, 8, generator=g, dtype=torch.float64)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    _, grad_c = branchy.value_and_grad(w, branchy.data.take(idx))
    for k in range(3):
        ref = autograd_loss_and_grad(_Branchy(), w[k], X[idx[k]], Y[idx[k]])[1]
        torch.testing.assert_close(grad_c[k], ref)


def test_grad_mode_refusals_name_the_fix():
    X, Y = _data()
    pot = from_module(_ParamBranch(), (X, Y), loss="mse")
    assert pot.grad_mode == "loop"  # auto falls back by itself
    with pytest.raises(ValueError, match=r"vmap cannot trace this model .*use grad_mode='loop'"):
        with_grad_mode(pot, "vmap")
    with pytest.raises(ValueError, match="unknown grad_mode 'fast'"):
        with_grad_mode(pot, "fast")
    with pytest.raises(ValueError, match="has its own gradient: leave grad_mode='auto'"):
        with_grad_mode(from_critical_point(kgon(5, 5)), "loop")
    assert as_potential(_ParamBranch(), (X, Y), grad_mode="loop").info["grad_mode_requested"] == "loop"


class _TokenLM(nn.Module):
    """(m, T) token ids -> (m, T, V) logits."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 4)
        self.out = nn.Linear(4, vocab)

    def forward(self, x):
        return self.out(self.emb(x))


def test_square_sequence_logits_warn_that_the_classes_are_read_on_axis_1():
    # (m, T, V) logits with T == V fit torch's (m, C, d) convention too, so the shape check cannot tell a
    # language model's logits (classes on the last axis) from a (m, C, d) model's: it says how it reads them
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (20, 7), generator=g)
    with pytest.warns(UserWarning, match=r"classes on axis 1 .*loss='causal_lm'"):
        from_module(_TokenLM(7), (ids, ids), loss="cross_entropy")
    with pytest.raises(ValueError, match="evaluate=causal_lm_loss"):  # T != V: refused by the shape
        from_module(_TokenLM(7), (ids[:, :5], ids[:, :5]), loss="cross_entropy")


class _GRU(nn.Module):
    """A fused recurrent layer: vmap batches its gradient but not its value alone (no batching rule for
    aten::gru.input without autograd)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


def test_a_recurrent_model_whose_values_vmap_cannot_batch_loops_over_the_chains():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(30, 5, 3, generator=g), torch.randn(30, 1, generator=g)
    net = _GRU()
    pot = from_module(net, (X, Y), loss="mse")
    assert pot.grad_mode == "loop" and "gru" in pot.info["vmap_error"]
    with torch.no_grad():
        want = float(nn.functional.mse_loss(net(X), Y))
    assert pot.anchor_loss() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="vmap cannot trace this model"):
        with_grad_mode(pot, "vmap")


class _IdsLM(nn.Module):
    """Token ids (m, T) -> logits (m, T, V), called as model(input_ids=...) like a HuggingFace model."""

    def __init__(self, vocab: int = 6) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.emb = nn.Embedding(vocab, 4)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, vocab)

    def forward(self, input_ids):
        h = self.emb(input_ids)
        return self.out(torch.tanh(self.mix(h.cumsum(1))))  # each position sees its prefix


def test_named_causal_lm_loss_is_the_token_mean_of_the_evaluate_hook():
    from slt_tms.potentials import causal_lm_loss

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 6, (24, 5), generator=g)
    net = _IdsLM()
    named = from_module(net, (ids,), loss="causal_lm")  # (X,): the labels are the ids themselves
    hook = from_module(net, {"input_ids": ids}, evaluate=causal_lm_loss)
    w = named.w_star + 0.05 * torch.randn(3, named.d, generator=g)
    for a, b in zip(named.value_and_grad(w, named.data.full()), hook.value_and_grad(w, hook.data.full()),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # labels -100 are ignored; rows predicting different numbers of tokens: the named loss is the mean over
    # all predicted tokens (torch's ignore_index mean), the hook's value on the full batch with the same
    # labels, and its per-row terms average to it over every partition of the rows
    labels = ids.clone()
    labels[:12, 3:] = -100
    labels[20, 1:] = -100  # a row that predicts nothing
    pot = from_module(net, (ids, labels), loss="causal_lm")
    masked = from_module(net, {"input_ids": ids, "labels": labels}, evaluate=causal_lm_loss)
    with torch.no_grad():
        want = nn.functional.cross_entropy(net(ids)[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
    assert pot.anchor_loss() == pytest.approx(float(want), rel=1e-6)
    assert masked.anchor_loss() == pytest.approx(float(want), rel=1e-6)
    w1 = pot.w_star + 0.05 * torch.randn(2, pot.d, generator=g)
    v_named, g_named = pot.value_and_grad(w1, pot.data.full())
    v_hook, g_hook = masked.value_and_grad(w1, masked.data.full())
    torch.testing.assert_close(v_named, v_hook, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_named, g_hook, rtol=1e-5, atol=1e-6)
    halves = [pot.value_and_grad(w1, pot.data.take(torch.arange(i, i + 12).expand(2, 12)))[0]
              for i in (0, 12)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, v_named, rtol=1e-5, atol=1e-6)
    assert float(halves[0][0]) != pytest.approx(float(v_named[0]), rel=1e-3)  # the halves differ
    with pytest.raises(ValueError, match="no token to predict"):
        from_module(net, (ids, torch.full_like(ids, -100)), loss="causal_lm")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\]"):
        from_module(net, (ids, ids + 1), loss="causal_lm")
    with pytest.raises(ValueError, match=r"needs a model that maps token ids"):
        from_module(net, (ids, ids.float()), loss="causal_lm")
