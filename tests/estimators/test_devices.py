"""``device=`` end to end: an unusable device is one line naming the fix, before any work; a ready-made
potential is not silently moved."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from slt_tms.cli import main
from slt_tms.estimators import estimate_llc
from slt_tms.estimators.series import estimate_llc_series
from slt_tms.potentials import from_tms
from slt_tms.theory import kgon, regular_quadratic

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
