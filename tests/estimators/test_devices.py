"""``device=`` end to end: an unusable device is one line naming the fix before any work, and no code path of
the estimator assumes the CPU.

This machine has no GPU, so a second device is faked in two ways, each proving something different:

* **The default device set to "meta"** while the estimator runs with ``device="cpu"`` requested
  explicitly (:func:`test_no_tensor_is_created_on_the_default_device`). On a GPU machine the default
  device is the CPU and the requested one is not; here the roles are played by "meta" and the CPU. A
  tensor created inside the estimator without an explicit device (``torch.tensor(...)``, ``torch.zeros``,
  ``torch.full`` ...) lands on "meta", and the first operation that mixes it with the CPU tensors of the
  run, or reads it back (``.item()``, ``.numpy()``), fails. So a full run of every estimator path (HMC,
  MALA, minibatch SGLD with RMSProp and the bias check, a restricted LLC, the TMS potential, a batched
  series) that passes creates every tensor on the requested device, or from one. The chains' random
  generators are recorded too: every ``torch.Generator`` outside the seed derivation
  (:func:`slt_tms._rng.spawn_seeds`, CPU by design: it only produces integers) is created on the
  requested device.
* **The meta device itself** for the per-step arithmetic (:func:`test_kernel_steps_run_on_meta`): the
  tempered target, one SGLD step (with a metric, the MALA diagnostic and RMSProp), one MALA transition and
  the warmup's adaptation run on meta tensors, which have shapes and dtypes but no data, so any host read
  (``float(t)``, ``.item()``, ``.numpy()``) or CPU tensor inside a step fails. HMC is not run there: it
  reads the number of leapfrog steps of the longest trajectory back to the host once per transition (a
  loop bound), which meta tensors cannot answer; the default-device test covers its arithmetic.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from slt_tms.cli import main
from slt_tms.estimators import estimate_llc
from slt_tms.estimators.series import estimate_llc_series
from slt_tms.potentials import FunctionalPotential, from_tms
from slt_tms.samplers import MALA, SGLD, RMSProp, Tempered, Warmup
from slt_tms.samplers.base import Draws
from slt_tms.theory import kgon, regular_quadratic
from slt_tms.tms import OneHotUniform, fixed_dataset

CUDA_BUILD = torch.version.cuda is not None
SHORT = {"num_chains": 2, "num_burnin": 30, "num_draws": 30, "progress": False}


def _regression(n: int = 60, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(3, 2, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, 2, generator=g,
                                                                                     dtype=torch.float64)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    return net, X, Y


# ---------------------------------------------------------------------------------------- unusable devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_request_is_one_line_naming_the_fix_before_any_work(monkeypatch, tmp_path, capsys):
    import slt_tms.estimators.llc as llc_mod

    def never(*args, **kwargs):
        raise AssertionError("reached: the device must be refused before any potential is built or sampled")

    monkeypatch.setattr(llc_mod, "as_potential", never)
    monkeypatch.setattr(llc_mod, "run_groups", never)
    net, X, Y = _regression()
    fix = r"use device='cpu'" + ("" if CUDA_BUILD else r", or install a CUDA build of torch")
    for source, data in ((net, (X, Y)), (regular_quadratic(3, n=100), None)):
        with pytest.raises(ValueError, match=rf"^device 'cuda': CUDA is not available .*{fix}") as err:
            estimate_llc(source, data, device="cuda")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"device 'cuda:1': CUDA is not available"):
        estimate_llc(net, (X, Y), device="cuda:1")
    with pytest.raises(ValueError, match=r"^device 'gpu' is not a torch device"):
        estimate_llc(net, (X, Y), device="gpu")

    calls = []
    with pytest.raises(ValueError, match=r"CUDA is not available"):
        estimate_llc_series([net.state_dict()], lambda: calls.append(1) or net, (X, Y), device="cuda")
    assert not calls  # refused before the model factory ran

    # the command line: one line, exit status 2, nothing written, for both kinds of run
    ck, data = tmp_path / "ck.safetensors", tmp_path / "data.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ck))
    save_file({"x": X, "y": Y}, str(data))
    (tmp_path / "f.py").write_text("from torch import nn\ndef make():\n    return nn.Sequential("
                                   "nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()\n")
    for args in ([str(ck), "--model", f"{tmp_path / 'f.py'}:make", "--data", str(data)],
                 [str(ck), str(ck), "--model", f"{tmp_path / 'f.py'}:make", "--data", str(data)],
                 ["--tms-critical", "5+", "--c", "6"]):
        out = tmp_path / "out"
        code = main(["llc", *args, "--device", "cuda", "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("slt-tms: error: --device 'cuda': CUDA is not available"), err
        assert "use --device cpu" in err and not out.exists()


def test_a_ready_made_potential_is_not_silently_moved():
    pot = from_tms(kgon(6, 6).flat(), c=6, n=1000)
    with pytest.raises(ValueError, match=r"built on cpu and cannot be moved to device='meta'"):
        estimate_llc(pot, device="meta", **SHORT)
    with pytest.raises(ValueError, match=r"built in torch\.float64 and cannot be converted"):
        estimate_llc(pot, dtype=torch.float32, **SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short chains are flagged
        res = estimate_llc(pot, device="cpu", dtype=torch.float64, **SHORT)  # what it is: accepted
    assert res.config["device"] == "cpu"


# ---------------------------------------------------------------------------------- a faked second device
@contextlib.contextmanager
def _default_device_meta_and_generators():
    """Default device "meta" for the block; records (calling module, device argument) of every
    ``torch.Generator`` created."""
    real = torch.Generator
    made: list[tuple[str, object]] = []

    def generator(*args, **kwargs):
        caller = inspect.stack()[1].frame.f_globals.get("__name__", "?")
        made.append((caller, kwargs.get("device", args[0] if args else None)))
        return real(*args, **kwargs)

    importlib.import_module("torch._dynamo")  # imported lazily by torch, creating tensors: not under test
    torch.set_default_device("meta")
    torch.Generator = generator  # type: ignore[misc]
    try:
        yield made
    finally:
        torch.Generator = real  # type: ignore[misc]
        torch.set_default_device(None)


def test_no_tensor_is_created_on_the_default_device():
    """Every estimator path, run with device='cpu' while the default device is "meta" (module docstring)."""
    net, X, Y = _regression()
    mask = {"0.weight": torch.rand(4, 3, generator=torch.Generator().manual_seed(1)) > 0.5}
    x_tms = fixed_dataset(OneHotUniform(6), 500, seed=0).double()
    hexagon = kgon(6, 6).flat()  # the theory package is not under test here
    classifier = nn.Linear(3, 3).double()
    linear = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()

    def make_on_cpu():  # a factory that says where it builds (as one building on a GPU would)
        with torch.device("cpu"):
            return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    W0 = [{k: v + 0.01 for k, v in net.state_dict().items()}, net.state_dict()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short chains are flagged; only the plumbing counts
        with _default_device_meta_and_generators() as made:
            runs = {
                "hmc": estimate_llc(net, (X, Y), device="cpu", **SHORT),
                "mala restricted": estimate_llc(net, (X, Y), device="cpu", params=["0.*"], masks=mask,
                                                sampler="mala", **SHORT),
                "sgld minibatch": estimate_llc(net, (X, Y), device="cpu", sampler="sgld", batch_size=16,
                                               preconditioner="rmsprop", **SHORT),
                "sgld minibatch, curvature start": estimate_llc(net, (X, Y), device="cpu", batch_size=16,
                                                                **SHORT),
                "tms one-hot": estimate_llc(from_tms(hexagon, c=6, data=x_tms, device="cpu"), **SHORT),
                "cross_entropy": estimate_llc(classifier, (X, (Y[:, 0] > 0).long()), loss="cross_entropy",
                                              device="cpu", **SHORT),
                "linear, sufficient statistics": estimate_llc(linear, (X, Y), device="cpu", **SHORT),
            }
            series = estimate_llc_series(W0, make_on_cpu, (X, Y), device="cpu", **SHORT)
    for name, res in [*runs.items(), *(("series", r) for r in series.results)]:
        assert math.isfinite(res.llc) and res.config["device"] == "cpu", name
    assert runs["sgld minibatch"].bias_check is not None
    assert runs["sgld minibatch, curvature start"].config["step_search_start"] is not None
    assert runs["linear, sufficient statistics"].config["potential"]["full_batch"].startswith("sufficient")
    chain_generators = [dev for caller, dev in made if caller != "slt_tms._rng"]
    assert chain_generators and all(torch.device(dev) == torch.device("cpu") for dev in chain_generators)


def test_the_fake_catches_a_tensor_created_without_a_device():
    """Negative control: code that creates a tensor without a device does fail under the fake."""
    w = torch.zeros(3, dtype=torch.float64)
    with _default_device_meta_and_generators(), pytest.raises((RuntimeError, NotImplementedError)):
        float((w + torch.zeros(3, dtype=torch.float64)).sum())  # the second zeros lands on meta


def test_kernel_steps_run_on_meta():
    """One SGLD step (metric, diagnostic), one MALA transition, RMSProp and the warmup adaptation on meta."""
    C, d = 3, 5
    meta = torch.device("meta")

    def single(w, rows):
        return 0.5 * (w * w).sum() + (w[0] * w[1]) ** 2

    pot = FunctionalPotential(w_star=torch.zeros(d, device=meta, dtype=torch.float64), n=100, data=None,
                              description="quartic on meta", single=single)
    target = Tempered(pot, torch.full((C,), 20.0, device=meta, dtype=torch.float64), 1.0,
                      torch.zeros(C, d, device=meta, dtype=torch.float64))
    w0 = torch.zeros(C, d, device=meta, dtype=torch.float64)

    def draws():
        return Draws(torch.empty(C, d, device=meta, dtype=torch.float64),
                     torch.empty(C, 2, device=meta, dtype=torch.float64), None)

    eps = torch.full((C,), 0.01, device=meta, dtype=torch.float64)
    ev = target.evaluate(w0, None)
    assert ev.grad.device == meta and ev.potential.shape == (C,)
    pre = RMSProp()
    v = pre.update(pre.init(w0), ev.grad)
    sgld = SGLD()
    state = sgld.init(w0, target, None)
    for _ in range(2):  # the second step computes the MALA diagnostic of the first move
        state, info = sgld.step(state, target, eps, None, draws(), pre.metric(v), same_batch=False)
    assert state.w.device == meta and info.accept_prob.device == meta and info.accept_prob.shape == (C,)
    mala = MALA()
    mstate, minfo = mala.step(mala.init(w0, target, None), target, eps, None, draws(),
                              torch.ones(C, d, device=meta, dtype=torch.float64))
    assert mstate.w.device == meta and minfo.divergent.dtype == torch.bool
    warm = Warmup(200, target_accept=0.6, adapt_metric=True)
    warm.start(eps, w0)
    step, metric = eps, None
    for it in range(60):
        step, metric = warm.after(it, minfo, mstate.w, step, metric)
    assert step.device == meta and metric is not None and metric.device == meta and metric.shape == (C, d)


def test_the_requested_dtype_is_the_one_sampled_in():
    net, X, Y = _regression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        series = estimate_llc_series([net.state_dict()], lambda: nn.Sequential(
            nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(), (X.float(), Y.float()), device="cpu",
            dtype=torch.float32, **SHORT)
    cfg = series.results[0].config
    assert cfg["device"] == "cpu" and cfg["dtype"] == "torch.float32"
