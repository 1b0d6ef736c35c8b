"""``slt-tms llc``: checkpoints (safetensors / .pt / TorchScript) + data files, TMS critical points, safety,
errors, outputs. Runs in-process through :func:`slt_tms.cli.main` with tiny chains and explicit step sizes."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from slt_tms.cli import main
from slt_tms.commands.llc import parse_critical_name
from slt_tms.io.user_models import load_data

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
FACTORY = str(ROOT / "examples" / "my_factory.py") + ":make_mlp"
TINY = ["--step-size", "1e-4", "--num-chains", "2", "--num-draws", "40", "--num-burnin", "10"]


def _make_mlp() -> torch.nn.Module:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from my_factory import make_mlp
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return make_mlp()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4-16-2 tanh MLP fitted for 150 Adam steps on 128 noisy linear-teacher rows, in every format."""
    tmp = tmp_path_factory.mktemp("llc_cli")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = x[:, :2] + 0.1 * torch.randn(128, 2, generator=g)
    net = _make_mlp()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    out = {
        "pt": tmp / "mlp.pt",
        "st": tmp / "mlp.safetensors",
        "ts": tmp / "mlp_ts.pt",
        "npz": tmp / "data.npz",
        "dst": tmp / "data.safetensors",
        "dpt": tmp / "data.pt",
    }
    torch.save({"epoch": 3, "state_dict": sd}, out["pt"])  # a nested training checkpoint
    save_file(sd, str(out["st"]))
    torch.jit.save(torch.jit.script(net), str(out["ts"]))
    np.savez(out["npz"], x=x.numpy(), y=y.numpy())
    save_file({"x": x, "y": y}, str(out["dst"]))
    torch.save({"inputs": x, "targets": y}, out["dpt"])
    return out


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["llc", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_end_to_end_pt_npz_outputs(files, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLT_TMS_NO_PROGRESS", raising=False)
    import arviz as az

    out = tmp_path / "res"
    code, stdout, stderr = _run(
        [
            str(files["pt"]),
            "--model",
            FACTORY,
            "--data",
            str(files["npz"]),
            *TINY,
            "--seed",
            "7",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, stderr
    assert "lambda_hat = " in stdout and "+/-" in stdout and "R-hat" in stdout
    assert "NOT TRUSTWORTHY" in stdout.splitlines()[0]  # 40 draws cannot converge: said on the first line
    assert "LLC (hmc)" in stderr  # one progress bar shown without --quiet
    assert "slt-tms llc: warning: LLC estimate" in stderr and "not converged" in stderr  # the flag, one line
    rec = json.loads((out / "llc.json").read_text())
    for key in ("llc", "se", "config", "seed", "rhat", "ess", "acceptance", "diverged", "flags", "converged"):
        assert key in rec
    assert rec["seed"] == 7 and rec["config"]["step_size"] == 1e-4 and rec["config"]["n"] == 128
    assert rec["config"]["num_chains"] == 2 and rec["config"]["num_draws"] == 40
    assert rec["config"]["cli"]["model"] == FACTORY and len(rec["config"]["cli"]["checkpoint_sha256"]) == 64
    idata = az.from_netcdf(str(out / "llc.nc"))
    trace = idata.posterior["llc"].values
    assert trace.shape == (2, 40)
    # the estimate is the mean of the stored post-burn-in trace (no chain diverged here)
    assert not any(rec["diverged"])
    assert math.isclose(rec["llc"], float(trace.mean()), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isfinite(rec["se"]) and rec["se"] > 0


def test_formats_agree(files, tmp_path, capsys, monkeypatch):
    """.pt + .npz, .safetensors + .safetensors, and a module-name factory give identical numbers; TorchScript
    sees the same anchor loss (its flat layout differs, so its chains do not coincide)."""
    res = {}
    runs = {
        "pt_npz": [str(files["pt"]), "--model", FACTORY, "--data", str(files["npz"])],
        "st_st": [str(files["st"]), "--model", FACTORY, "--data", str(files["dst"])],
        "ts": [
            str(files["ts"]),
            "--torchscript",
            "--trust-torchscript",
            "--data",
            str(files["dpt"]),
            "--x-key",
            "inputs",
            "--y-key",
            "targets",
        ],
    }
    for name, args in runs.items():
        code, _, err = _run([*args, *TINY, "--quiet", "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
        res[name] = json.loads((tmp_path / name / "llc.json").read_text())
    monkeypatch.chdir(ROOT / "examples")  # MODULE as an import name, found on the current directory
    code, _, err = _run(
        [
            str(files["st"]),
            "--model",
            "my_factory:make_mlp",
            "--data",
            str(files["npz"]),
            *TINY,
            "--quiet",
            "--out",
            str(tmp_path / "mod"),
        ],
        capsys,
    )
    assert code == 0, err
    res["mod"] = json.loads((tmp_path / "mod" / "llc.json").read_text())
    assert res["pt_npz"]["llc"] == res["st_st"]["llc"] == res["mod"]["llc"]
    assert res["pt_npz"]["traces"] == res["st_st"]["traces"]
    a_sd, a_ts = res["pt_npz"]["config"]["anchor_loss"], res["ts"]["config"]["anchor_loss"]
    assert math.isclose(a_sd, a_ts, rel_tol=1e-5)
    assert res["ts"]["config"]["d"] == res["pt_npz"]["config"]["d"] == 114
    assert math.isfinite(res["ts"]["llc"])


def test_torchscript_minibatch_and_cross_entropy(tmp_path, capsys):
    """TorchScript with per-chain minibatches (vmap over the lowered graph) and integer class labels."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 3, generator=g)
    labels = (x[:, 0] > 0).to(torch.int32) + (x[:, 1] > 0).to(torch.int32)  # 3 classes, int32 on disk
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "clf.pt"))
    np.savez(tmp_path / "clf.npz", x=x.numpy(), y=labels.numpy())
    code, _, err = _run(
        [
            str(tmp_path / "clf.pt"),
            "--torchscript",
            "--trust-torchscript",
            "--data",
            str(tmp_path / "clf.npz"),
            "--loss",
            "cross_entropy",
            "--batch-size",
            "16",
            *TINY,
            "--quiet",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    rec = json.loads((tmp_path / "o" / "llc.json").read_text())
    assert rec["config"]["kind"] == "minibatch" and rec["config"]["batch_size"] == 16
    assert rec["config"]["d"] == sum(p.numel() for p in net.parameters())
    assert rec["config"]["sampler_used"] == "sgld"
    # anchor loss = full-data cross-entropy of the untouched network
    with torch.no_grad():
        want = float(torch.nn.functional.cross_entropy(net(x), labels.long()))
    assert math.isclose(rec["config"]["anchor_loss"], want, rel_tol=1e-5)


class _Evil:
    """Unpickling this runs ``open(marker, "w")``: proof of code execution if the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("as_what", ["checkpoint", "torchscript", "data"])
def test_malicious_pickle_refused_without_executing(files, tmp_path, capsys, as_what):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"0.weight": _Evil(marker)}, evil)
    assert not marker.exists()
    if as_what == "checkpoint":
        args = [str(evil), "--model", FACTORY, "--data", str(files["npz"])]
    elif as_what == "torchscript":
        args = [str(evil), "--torchscript", "--trust-torchscript", "--data", str(files["npz"])]
    else:
        args = [str(files["pt"]), "--model", FACTORY, "--data", str(evil)]
    code, _, err = _run([*args, *TINY, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert not marker.exists(), "the pickle's code ran"
    assert err.startswith("slt-tms: error:") and err.count("\n") == 1
    if as_what != "torchscript":
        assert "weights_only=True" in err
    else:
        assert "TorchScript" in err
    assert not (tmp_path / "o").exists()
    # the payload is real: an unrestricted torch.load runs it (so the assertions above can fail)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def _write_factory(tmp_path: Path, body: str) -> str:
    f = tmp_path / "factories.py"
    f.write_text("import torch\n" + body)
    return str(f)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_checkpoint", "checkpoint not found"),
        ("missing_data", "data file not found"),
        ("unknown_loss", "unknown --loss 'hinge'; allowed: mse, cross_entropy"),
        ("zero_step", "--step-size must be a finite positive number"),
        ("negative_step", "--step-size must be a finite positive number"),
        ("untrusted_torchscript", "--trust-torchscript"),
        ("out_is_a_file", "is a file, not a directory"),
        ("factory_not_found", "factory 'nope' not found"),
        ("module_not_found", "cannot import module 'no_such_module_xyz'"),
        ("bad_spec", "--model must be MODULE:FACTORY"),
        ("not_a_module", "must return a torch.nn.Module"),
        ("shape_mismatch", "shape mismatch: 0.weight: checkpoint (16, 4) vs model (8, 4)"),
        ("extra_keys", "not in model: 2.weight, 2.bias"),
        ("data_keys", "found: 'x' (128, 4), 'y' (128, 2)"),
        ("input_width", "cannot be applied to the inputs of shape (10, 5)"),
        ("no_model", "--model MODULE:FACTORY or --torchscript"),
        ("no_data", "--data FILE is required"),
        ("critical_no_c", "--tms-critical needs --c"),
        ("critical_bad_name", "unknown critical point name 'hexagon'"),
        ("critical_with_data", "do not give CHECKPOINT"),
        ("bad_potential", "unknown --potential 'exact'"),
        ("nonnumeric_ckpt", "unknown file type '.txt'"),
        ("empty_out", "--out is empty"),
        ("same_checkpoint_twice", "is given twice"),
        ("huge_seed", "--seed must be an integer in [0, 9223372036854775807]"),
        ("nan_data", "the data's inputs (X) contain NaN in 1 of 128 rows (the first: row 5)"),
        ("series_nan_checkpoint", "checkpoint nan.pt: parameters holding NaN or inf: 0.weight"),
    ],
)
def test_bad_input_one_line_errors(files, tmp_path, capsys, case, expect):
    ck, data = str(files["pt"]), str(files["npz"])
    base = [ck, "--model", FACTORY, "--data", data]
    fac = _write_factory(
        tmp_path,
        "def narrow():\n    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), "
        "torch.nn.Linear(8, 2))\n"
        "def short():\n    return torch.nn.Sequential(torch.nn.Linear(4, 16))\n"
        "def not_module():\n    return 3\n",
    )
    txt = tmp_path / "ck.txt"
    txt.write_text("hello")
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((10, 5), np.float32), y=np.zeros((10, 2), np.float32))
    args = {
        "missing_checkpoint": [str(tmp_path / "nope.pt"), "--model", FACTORY, "--data", data],
        "missing_data": [ck, "--model", FACTORY, "--data", str(tmp_path / "nope.npz")],
        "unknown_loss": [*base, "--loss", "hinge"],
        "zero_step": [*base, "--step-size", "0"],
        "negative_step": [*base, "--step-size=-1e-3"],
        "factory_not_found": [ck, "--model", FACTORY.replace("make_mlp", "nope"), "--data", data],
        "module_not_found": [ck, "--model", "no_such_module_xyz:make", "--data", data],
        "bad_spec": [ck, "--model", "make_mlp", "--data", data],
        "not_a_module": [ck, "--model", f"{fac}:not_module", "--data", data],
        "shape_mismatch": [ck, "--model", f"{fac}:narrow", "--data", data],
        "extra_keys": [ck, "--model", f"{fac}:short", "--data", data],
        "data_keys": [*base, "--x-key", "inputs"],
        "input_width": [ck, "--model", FACTORY, "--data", str(wide)],
        "no_model": [ck, "--data", data],
        "no_data": [ck, "--model", FACTORY],
        "critical_no_c": ["--tms-critical", "5+"],
        "critical_bad_name": ["--tms-critical", "hexagon", "--c", "6"],
        "critical_with_data": ["--tms-critical", "5+", "--c", "6", "--data", data],
        "bad_potential": ["--tms-critical", "5+", "--c", "6", "--potential", "exact"],
        "nonnumeric_ckpt": [str(txt), "--model", FACTORY, "--data", data],
        "untrusted_torchscript": [str(files["ts"]), "--torchscript", "--data", data],
        "out_is_a_file": [*base],
        "empty_out": [*base],
        "same_checkpoint_twice": [ck, ck, "--model", FACTORY, "--data", data],
        "huge_seed": [*base, "--seed", str(2**70)],
        "nan_data": [ck, "--model", FACTORY, "--data", str(tmp_path / "nan.npz")],
        "series_nan_checkpoint": [ck, str(tmp_path / "nan.pt"), "--model", FACTORY, "--data", data],
    }[case]
    if case == "nan_data":
        arrays = dict(np.load(data))
        arrays["x"] = arrays["x"].copy()
        arrays["x"][5, 0] = np.nan
        np.savez(tmp_path / "nan.npz", **arrays)
    if case == "series_nan_checkpoint":
        state = torch.load(ck, weights_only=True)["state_dict"]  # a nested training checkpoint
        torch.save({**state, "0.weight": torch.full_like(state["0.weight"], math.nan)}, tmp_path / "nan.pt")
    if not any(a.startswith("--step-size") for a in args):
        args = [*args, *TINY]
    elif case in ("zero_step", "negative_step"):
        args = [*args, "--num-draws", "10"]
    out = tmp_path / "o"
    if case == "out_is_a_file":
        out.write_text("a file")
    code, _, err = _run([*args, "--quiet", "--out", "" if case == "empty_out" else str(out)], capsys)
    assert code == 2, (case, err)
    assert err.startswith("slt-tms: error:") and err.count("\n") == 1, err
    assert expect in err, err
    assert not out.exists() or case == "out_is_a_file"


def test_load_data_conversions(files, tmp_path):
    x, y = load_data(files["npz"])
    assert x.shape == (128, 4) and y.dtype == torch.float32
    np.savez(tmp_path / "int.npz", x=np.zeros((3, 2), np.float32), y=np.array([0, 2, 1], np.int16))
    _, y_ce = load_data(tmp_path / "int.npz", labels=True)
    _, y_mse = load_data(tmp_path / "int.npz", labels=False)
    assert y_ce.dtype == torch.int64 and y_mse.is_floating_point()
    np.savez(tmp_path / "rows.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match="leading sample axis"):
        load_data(tmp_path / "rows.npz")


def test_parse_critical_name():
    assert parse_critical_name("5+") == (5, 1, 0)
    assert parse_critical_name("4++") == (4, 2, 0)
    assert parse_critical_name("4+,2-") == (4, 1, 2)
    with pytest.raises(ValueError, match="TMS paper's names"):
        parse_critical_name("5-gon")


#: A fixed small step and no step-size ladder: the CLI tests check the plumbing, not the calibration.
_FIXED_STEP = ["--step-size", "1e-4", "--no-ladder"]


def test_tms_critical_population(tmp_path, capsys):
    out = tmp_path / "cp"
    args = "--tms-critical 5+ --c 6 --n 1000 --num-chains 2 --num-draws 60 --num-burnin 10"
    code, stdout, err = _run([*args.split(), *_FIXED_STEP, "--out", str(out)], capsys)
    assert code == 0, err
    assert "theory          lambda = 8.5" in stdout  # rank(H)/2 = 17/2 (slt_tms.theory.critical_points.kgon)
    rec = json.loads((out / "llc.json").read_text())
    cli = rec["config"]["cli"]
    assert cli["critical_point"] == "5+" and cli["c"] == 6 and cli["potential"] == "population"
    assert cli["lambda_theory"] == 8.5
    assert rec["config"]["kind"] == "population" and rec["config"]["d"] == 18 and rec["config"]["n"] == 1000
    assert math.isfinite(rec["llc"])


def test_tms_critical_empirical(tmp_path, capsys):
    out = tmp_path / "cp"
    args = "--tms-critical 6 --c 6 --potential empirical --n 200 --batch-size 50 --num-chains 2"
    args += " --num-draws 30 --num-burnin 5 --quiet"
    code, _, err = _run([*args.split(), *_FIXED_STEP, "--out", str(out)], capsys)
    assert code == 0, err
    rec = json.loads((out / "llc.json").read_text())
    assert rec["config"]["kind"] == "minibatch" and rec["config"]["potential"]["data"]["num_rows"] == 200
    assert rec["config"]["cli"]["data_seed"] is not None


@pytest.mark.filterwarnings("ignore:LLC estimate .* is not trustworthy:RuntimeWarning")  # tiny budget
def test_example_runs_tiny(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["llc_custom_model.py", "--tiny"])
    monkeypatch.setenv("SLT_TMS_NO_PROGRESS", "1")
    runpy.run_path(str(ROOT / "examples" / "llc_custom_model.py"), run_name="__main__")
    assert "lambda_hat = " in capsys.readouterr().out


def test_one_source_of_defaults_cli_docs_api(capsys):
    """The CLI help, the documentation table and the API all show LLCConfig's defaults, and the
    documentation builds its table from the code (so it cannot drift)."""
    import dataclasses
    import re

    from slt_tms.estimators import LLCConfig
    from slt_tms.estimators.config import defaults_table

    with pytest.raises(SystemExit):
        main(["llc", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    helptext = helptext[helptext.index("options:"):]  # past the usage line
    table = defaults_table()
    for f in dataclasses.fields(LLCConfig):
        shown = "none" if f.default is None else (
            " ".join(map(str, f.default)) if isinstance(f.default, tuple) else str(f.default))
        flag = "--" + f.name.replace("_", "-")
        # the option's own entry: the flag followed by its metavar or its --no- twin (other options'
        # help mentions it too, e.g. "(or --max-draws)")
        m = re.search(re.escape(flag) + r"(?:,| [A-Z]).*?\(default: ([^)]*)\)", helptext)
        assert m and m.group(1) == shown, (flag, m and m.group(1), shown)
        assert f"| `{f.name}` | `{'None' if f.default is None else shown}` |" in table
    doc = (ROOT / "docs" / "estimators.md").read_text()
    assert "print(defaults_table())" in doc
    # no hand-written default in the estimator's docstrings or docs can contradict the code
    for text in (doc, __import__("slt_tms.estimators.llc", fromlist=["x"]).__doc__):
        assert "localization 100" not in text and "MALA by default" not in text
