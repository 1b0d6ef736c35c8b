"""Training: the update, reproducibility, batched = separate runs, schedule, validation, the CLI."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slt_tms.commands.train as train_cmd
from slt_tms.cli import main
from slt_tms.io import load_checkpoint
from slt_tms.tms.data import OneHotUniform, SparseUniform, fixed_dataset
from slt_tms.tms.losses import empirical_loss, residual_and_grad, weighted_sq_error
from slt_tms.tms.model import ACTIVATIONS, TMS, forward, num_params
from slt_tms.train import log_checkpoint_schedule, train

FAST = settings(max_examples=30, deadline=None)
C, R = 4, 2
D = num_params(C, R)


def _w0(B=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (D,) if B is None else (B, D)
    return 0.3 * torch.randn(shape, generator=g, dtype=dtype)


def _data(n=64, seed=0):
    return fixed_dataset(SparseUniform(C, 0.5), n, seed=seed).double()


# ------------------------------------------------------------------------------------------ schedule
@given(num_steps=st.integers(1, 300_000), k=st.integers(2, 300))
@FAST
def test_checkpoint_schedule_properties(num_steps, k):
    s = log_checkpoint_schedule(num_steps, k)
    assert s.dtype == np.int64
    assert s[0] == 0 and s[-1] == num_steps
    assert np.all(np.diff(s) > 0)  # unique, ascending
    assert len(s) == min(k, num_steps + 1)
    if len(s) >= 3:
        assert s[1] == 1
        # log spacing: the gaps never shrink (the ratio is recomputed only upward, see docstring)
        assert np.all(np.diff(s[1:]) >= 1)


def test_checkpoint_schedule_is_geometric_when_room():
    # 1, 10, 100, 1000: the exact geometric progression when rounding does not interfere
    assert log_checkpoint_schedule(1000, 5).tolist() == [0, 1, 10, 100, 1000]


@pytest.mark.parametrize("args", [(0, 5), (10, 1), (-1, 3), (1.5, 3), (10, True)])
def test_checkpoint_schedule_validation(args):
    with pytest.raises(ValueError, match="must be an integer >="):
        log_checkpoint_schedule(*args)


# ------------------------------------------------------------------------------------------ gradient
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batched", [False, True])
def test_closed_form_gradient_equals_autograd(activation, batched):
    B = 3 if batched else None
    w = _w0(B, seed=1)
    x = _data(16)[None].expand(3, -1, -1).clone() if batched else _data(16)
    imp = torch.rand(C, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    imp_b = imp.unsqueeze(-2)
    wg = w.clone().requires_grad_(True)
    weighted_sq_error(forward(wg, x, C, R, activation, 2.5), x, imp_b).sum().backward()
    got = residual_and_grad(w, x, imp_b * (2.0 / 16), C, R, activation, 2.5)[1]
    torch.testing.assert_close(got, wg.grad, rtol=1e-10, atol=1e-12)


def test_one_full_batch_sgd_step_is_gradient_descent():
    """batch_size = n: the minibatch is the whole dataset, so w1 = w0 - lr * grad L_n(w0) (+ decay)."""
    w0, x = _w0(), _data(32)
    lr, wd = 0.05, 0.1
    traj = train(w0, c=C, r=R, data=x, lr=lr, weight_decay=wd, batch_size=32, num_steps=1,
                 progress=False)
    wg = w0.clone().requires_grad_(True)
    empirical_loss(wg, x, C, R).backward()
    torch.testing.assert_close(traj.final, w0 - lr * (wg.grad + wd * w0), rtol=1e-12, atol=1e-14)


def test_training_reduces_loss_below_best_constant_model():
    """Fixed one-hot dataset, c = 4, r = 2. The best model that ignores its input (W = 0, b_i = 1/(2c))
    has L = 1/3 - 1/(4c) (1/3 - 1/16 = 0.2708 in population); the trained model must beat
    it on its training set by far more than the sampling error of that baseline (~0.01 at n = 500)."""
    x = fixed_dataset(OneHotUniform(C), 500, seed=0)
    w0 = TMS(C, R, generator=torch.Generator().manual_seed(0)).flat()
    traj = train(w0, c=C, r=R, data=x, optimizer="adamw", lr=0.02, batch_size=50, num_steps=400,
                 progress=False)
    baseline = 1 / 3 - 1 / (4 * C)
    assert traj.losses[-1] < traj.losses[0]
    assert traj.losses[-1] < baseline - 0.1
    # the logged loss is the full-dataset loss of the checkpoint at that step
    torch.testing.assert_close(float(empirical_loss(traj.final, x, C, R)), float(traj.losses[-1]))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_same_seed_identical_different_seed_differs(optimizer):
    kw = dict(c=C, r=R, data=SparseUniform(C, 0.3), optimizer=optimizer, lr=0.01, batch_size=8,
              num_steps=30, num_checkpoints=6, progress=False)
    a = train(_w0(), seed=5, **kw)
    b = train(_w0(), seed=5, **kw)
    c = train(_w0(), seed=6, **kw)
    assert torch.equal(a.checkpoints, b.checkpoints) and np.array_equal(a.losses, b.losses)
    assert not torch.equal(a.final, c.final)
    assert a.seed == 5 and a.config["seed"] == 5 and a.config["optimizer"] == optimizer


def test_generator_seed_is_recorded_and_reproduces():
    kw = dict(c=C, r=R, data=_data(), lr=0.05, batch_size=8, num_steps=20, progress=False)
    a = train(_w0(), seed=torch.Generator().manual_seed(3), **kw)
    b = train(_w0(), seed=a.seed, **kw)
    assert torch.equal(a.final, b.final)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("source", ["dataset", "per-instance-dataset", "distribution", "callable"])
def test_batched_instances_equal_separate_runs(optimizer, source):
    B = 3
    w0 = _w0(B, seed=4)
    per_inst = torch.stack([_data(40, seed=s) for s in range(B)])
    imp = torch.rand(B, C, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def data_for(i):
        if source == "dataset":
            return _data(40)
        if source == "per-instance-dataset":
            return per_inst if i is None else per_inst[i]
        if source == "distribution":
            return SparseUniform(C, 0.4)
        return lambda m, g: SparseUniform(C, 0.4).sample(m, g).double()

    kw = dict(c=C, r=R, optimizer=optimizer, lr=0.03, batch_size=8, num_steps=25, weight_decay=0.01,
              num_checkpoints=5, seed=11, progress=False, eval_size=64)
    batched = train(w0, data=data_for(None), importance=imp, **kw)
    assert batched.final.shape == (B, D) and batched.checkpoints.shape == (5, B, D)
    assert batched.losses.shape == (len(batched.steps), B)
    for i in range(B):
        single = train(w0[i], data=data_for(i), importance=imp[i], **kw)
        torch.testing.assert_close(batched.checkpoints[:, i], single.checkpoints, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(batched.losses[:, i], single.losses, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("data", [_data(40), SparseUniform(C, 0.4)], ids=["dataset", "distribution"])
def test_unshared_batches_differ_across_identical_instances(data):
    w0 = _w0(None, seed=1).expand(2, -1).clone()
    kw = dict(c=C, r=R, data=data, lr=0.05, batch_size=8, num_steps=10, progress=False)
    shared = train(w0, **kw)
    own = train(w0, shared_batches=False, **kw)
    assert torch.equal(shared.final[0], shared.final[1])
    assert not torch.equal(own.final[0], own.final[1])


def test_trajectory_contents():
    w0 = _w0()
    traj = train(w0, c=C, r=R, data=_data(), lr=0.01, batch_size=16, num_steps=100, num_checkpoints=8,
                 log_every=10, progress=False)
    assert traj.steps.tolist() == list(range(0, 101, 10))
    assert traj.losses.shape == (11,)
    assert traj.checkpoint_steps.tolist() == log_checkpoint_schedule(100, 8).tolist()
    assert torch.equal(traj.checkpoints[0], w0) and torch.equal(traj.checkpoints[-1], traj.final)
    assert traj.final.dtype == torch.float64 and traj.final.device.type == "cpu"
    json.dumps(traj.to_dict())  # JSON-serialisable, config included
    for key in ("c", "r", "activation", "optimizer", "lr", "batch_size", "num_steps", "seed", "data"):
        assert key in traj.config
    # every checkpoint's full-data loss equals the logged loss at the same step
    x = _data()
    for s, w in zip(traj.checkpoint_steps, traj.checkpoints, strict=True):
        if s in traj.steps:
            logged = traj.losses[list(traj.steps).index(s)]
            assert float(empirical_loss(w, x, C, R)) == pytest.approx(logged, rel=1e-12)
    assert not w0.requires_grad  # input untouched


def test_epochs_visit_every_sample_once():
    """For a tiny lr, SGD is linear in the minibatch gradients at w0 (error O(lr^2)): one epoch of
    n / batch_size = 4 steps moves w by lr * sum of 4 batch-mean gradients, which equals
    lr * 4 * (full-data mean gradient) only if the 4 minibatches partition the dataset (no repeats)."""
    x, w0 = _data(24), _w0()
    traj = train(w0, c=C, r=R, data=x, lr=1e-6, batch_size=6, num_steps=4, progress=False)
    wg = w0.clone().requires_grad_(True)
    empirical_loss(wg, x, C, R).backward()
    torch.testing.assert_close((w0 - traj.final) / 1e-6, 4 * wg.grad, rtol=1e-4, atol=1e-8)


def test_progress_can_be_silenced(capsys):
    train(_w0(), c=C, r=R, data=_data(), num_steps=5, batch_size=4, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ------------------------------------------------------------------------------------------ validation
GOOD = dict(c=C, r=R, lr=0.01, batch_size=4, num_steps=3, progress=False)


@given(lr=st.one_of(st.floats(max_value=0.0), st.sampled_from([float("nan"), float("inf")]),
                    st.text(max_size=2)))
@FAST
def test_invalid_lr(lr):
    with pytest.raises(ValueError, match=r"lr \(learning rate\) must be a finite number > 0"):
        train(_w0(), data=_data(), **{**GOOD, "lr": lr})


@given(name=st.sampled_from(["batch_size", "num_steps", "num_checkpoints"]),
       value=st.one_of(st.integers(max_value=0), st.floats(), st.booleans()))
@FAST
def test_invalid_integer_arguments(name, value):
    with pytest.raises(ValueError, match=f"{name} must be an integer >="):
        train(_w0(), data=_data(), **{**GOOD, name: value})


@given(opt=st.text(max_size=6).filter(lambda s: s.lower() not in ("sgd", "adamw")))
@FAST
def test_invalid_optimizer(opt):
    with pytest.raises(ValueError, match="allowed: sgd, adamw"):
        train(_w0(), data=_data(), **{**GOOD, "optimizer": opt})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w0": torch.zeros(D + 1)}, r"w0 must have shape \(d,\) or \(B, d\) with d = r\*c \+ c = 12"),
        ({"w0": torch.zeros(2, 2, D)}, r"w0 must have shape \(d,\) or \(B, d\)"),
        ({"w0": torch.zeros(D, dtype=torch.int64)}, "floating-point"),
        ({"w0": torch.full((D,), float("nan"))}, "NaN"),
        ({"data": torch.zeros(10, C + 1)}, r"dataset must have shape \(n, 4\)"),
        ({"data": torch.zeros(3, 10, C)}, r"dataset must have shape \(n, 4\)"),  # (B, n, c) needs (B, d) w0
        ({"data": torch.zeros(2, C), "batch_size": 4}, "batch_size must be <= n = 2"),
        ({"data": OneHotUniform(C + 1)}, "distribution has c = 5"),
        ({"data": "not data"}, "data must be a distribution"),
        ({"data": lambda m, g: torch.zeros(m, C + 1)}, r"returned shape \(\d+, 5\); expected \(\d+, 4\)"),
        ({"importance": torch.ones(C + 1)}, r"importance must have shape \(4,\)"),
        ({"importance": -torch.ones(C)}, "non-negative"),
        ({"activation": "tanh"}, "allowed: relu, linear, swish"),
        ({"c": 0}, "integer >= 1"),
        ({"r": 0}, "integer >= 1"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"log_every": 0}, "log_every must be an integer >= 1"),
    ],
)
def test_invalid_inputs(kwargs, match):
    args = {"w0": _w0(), "data": _data(), **GOOD, **kwargs}
    with pytest.raises(ValueError, match=match):
        train(**args)


def test_batched_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, n, 4\)"):
        train(_w0(2), data=torch.zeros(3, 10, C), **GOOD)
    with pytest.raises(ValueError, match=r"importance must have shape \(4,\) or \(2, 4\)"):
        train(_w0(2), data=_data(), importance=torch.ones(3, C), **GOOD)


# ------------------------------------------------------------------------------------------ CLI
CLI_ARGS = ["train", "--c", "3", "--r", "2", "--steps", "40", "--batch-size", "10", "--num-checkpoints",
            "6", "--quiet"]


def test_cli_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    rc = main([*CLI_ARGS, "--n", "50", "--optimizer", "adamw", "--lr", "0.01", "--out", str(out)])
    assert rc == 0
    rec = json.loads((out / "trajectory.json").read_text())
    assert rec["args"]["c"] == 3 and rec["seed"] == rec["config"]["seed"] and rec["config"]["num_steps"] == 40
    assert len(rec["steps"]) == len(rec["losses"]) and rec["steps"][-1] == 40
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, meta = load_checkpoint(out / "checkpoint.safetensors")
    assert meta["c"] == 3 and meta["r"] == 2 and meta["step"] == 40 and meta["seed"] == 0
    assert w.shape == (num_params(3, 2),)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [f"step_{s:07d}.safetensors" for s in rec["checkpoint_steps"]]
    w_last, meta_last = load_checkpoint(out / "checkpoints" / names[-1])
    assert torch.equal(w_last, w) and meta_last["step"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging leftovers
    # rerunning with the same seed reproduces the run bit for bit
    assert main([*CLI_ARGS, "--n", "50", "--optimizer", "adamw", "--lr", "0.01", "--out", str(out)]) == 0
    assert torch.equal(load_checkpoint(out / "checkpoint.safetensors")[0], w)


def test_cli_sparse_fresh_samples(tmp_path):
    out = tmp_path / "sparse"
    assert main([*CLI_ARGS, "--distribution", "sparse", "--sparsity", "0.7", "--importance-decay", "0.9",
                 "--activation", "swish", "--gamma", "4", "--out", str(out)]) == 0
    rec = json.loads((out / "trajectory.json").read_text())
    assert rec["config"]["data"]["kind"] == "distribution" and rec["config"]["eval_size"] > 0
    assert rec["config"]["importance"][1] == pytest.approx(0.9)
    assert load_checkpoint(out / "checkpoint.safetensors")[1]["activation"] == "swish"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--distribution", "sparse"], "needs --sparsity"),
        (["--distribution", "sparse", "--sparsity", "1.5"], r"sparsity must be a number in \[0, 1\)"),
        (["--sparsity", "0.5"], "only to --distribution sparse"),
        (["--n", "0"], "positive integer"),
        (["--n", "5"], "batch_size must be <= n = 5"),
        (["--lr", "-1"], "must be a finite number > 0"),
        (["--importance-decay", "0"], "importance-decay must be"),
    ],
)
def test_cli_failure_writes_nothing(tmp_path, capsys, extra, match):
    out = tmp_path / "bad"
    assert main([*CLI_ARGS, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "slt-tms: error:" in err and re.search(match, err)
    assert list(tmp_path.iterdir()) == []


def test_cli_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(train_cmd, "plot_loss_curve", boom)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated"):
        main([*CLI_ARGS, "--out", str(out)])
    assert list(tmp_path.iterdir()) == []  # no output dir, no staging dir, no checkpoint files


def test_cli_failure_keeps_previous_outputs(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*args, **kwargs):
        raise RuntimeError("simulated")

    monkeypatch.setattr(train_cmd, "plot_loss_curve", boom)
    with pytest.raises(RuntimeError):
        main([*CLI_ARGS, "--seed", "1", "--out", str(out)])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ------------------------------------------------------------------------------------------ docs
DOC = Path(__file__).resolve().parents[1] / "docs" / "foundation.md"


def test_docs_examples_run(tmp_path, monkeypatch, capsys):
    """The Python example and the `slt-tms train` command of docs/foundation.md run as written."""
    text = DOC.read_text()
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
    assert (tmp_path / "example_ckpt.safetensors").exists()
    commands = [ln for ln in text.splitlines() if ln.startswith("slt-tms train --")]
    assert len(commands) == 1
    assert main(shlex.split(commands[0].strip())[1:]) == 0
    assert (tmp_path / "runs" / "c6" / "trajectory.json").exists()
