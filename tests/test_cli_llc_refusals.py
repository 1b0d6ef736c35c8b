"""``slt-tms llc``: flags that would do nothing are refused, errors name flags (not config fields), a data
file that is not tensors gets data advice, and a series whose names carry no step says how it numbers them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import slt_tms.commands.llc as llc_command
from slt_tms.cli import main
from slt_tms.estimators import LLCConfig
from slt_tms.io.user_models import load_data

ROWS = 64
TINY = ["--num-burnin", "20", "--num-draws", "40", "--num-chains", "2"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A linear model's factory, its least-squares checkpoint and the data it was fitted on."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(ROWS, 1, generator=g)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(ROWS, 1)], 1), y).solution
    (tmp_path / "fac.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(3, 1)\n")
    state = {"weight": sol[:3].T.contiguous(), "bias": sol[3].contiguous()}
    save_file(state, str(tmp_path / "ckpt_100.safetensors"))
    save_file(state, str(tmp_path / "ckpt_200.safetensors"))
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    return {"factory": tmp_path / "fac.py", "ckpt": tmp_path / "ckpt_100.safetensors",
            "ckpt2": tmp_path / "ckpt_200.safetensors", "data": tmp_path / "data.npz", "x": x, "y": y}


def _base(files: dict[str, Path], *ckpts: Path) -> list[str]:
    return ["llc", *(str(c) for c in (ckpts or (files["ckpt"],))), "--model", f"{files['factory']}:make",
            "--data", str(files["data"])]


def _nothing_runs(monkeypatch: pytest.MonkeyPatch, *, load: bool = False) -> None:
    """Make any estimate (and, unless ``load``, reading the data) fail the test: a refusal comes first."""
    def ran(*_a, **_k):
        raise AssertionError("the refusal should have come before this")

    for name in ("estimate_llc", "estimate_llc_series", "estimate_llc_series_resumable"):
        monkeypatch.setattr(llc_command, name, ran)
    if not load:
        monkeypatch.setattr(llc_command, "load_data", ran)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("slt-tms: error: ") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------ 1. flags that do nothing
@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--multiplicity", "2"], "--multiplicity does nothing without a ladder"),
        (["--correction-exponent", "0.5"], "--correction-exponent does nothing without a ladder"),
        (["--asymptotic-rse", "0.01"], "--asymptotic-rse does nothing without a ladder"),
        (["--ladder", "1", "2", "--multiplicity", "2", "--asymptotic-rse", "0.01"],
         "--asymptotic-rse does nothing with --multiplicity 2"),
        (["--ladder", "1", "2", "--multiplicity", "2", "--correction-exponent", "0.5"],
         "--correction-exponent does nothing with --multiplicity 2"),
        (["--preconditioner", "rmsprop"], "--preconditioner does nothing with HMC (--sampler auto on"),
        (["--sampler", "mala", "--no-bias-check"], "--no-bias-check does nothing with --sampler mala"),
        (["--batch-size", "10", "--num-leapfrog", "4"], "--num-leapfrog does nothing with SGLD"),
        (["--sampler", "sgld", "--no-exact-localization"], "--no-exact-localization does nothing with"),
        (["--batch-size", "10", "--adapt-metric"], "--adapt-metric does nothing with SGLD"),
        (["--step-size", "0.01", "--target-accept", "0.8"], "--target-accept does nothing with --step-size"),
        (["--max-draws", "100"], "--max-draws does nothing with --num-draws"),
        (["--draws-per-block", "100"], "--draws-per-block does nothing with --num-draws"),
        (["--batch-size", "10", "--escape-fraction", "0.3"], "--escape-fraction does nothing with"),
        (["--no-ladder"], "--no-ladder does nothing without --tms-critical"),
        (["--trust-torchscript"], "--trust-torchscript does nothing without --torchscript"),
        (["--no-reuse-calibration"], "--no-reuse-calibration does nothing with a single checkpoint"),
    ],
)
def test_idle_flag_is_refused_before_anything_is_read(files, tmp_path, capsys, monkeypatch, extra, expect):
    _nothing_runs(monkeypatch)
    err = _refused([*_base(files), *TINY, *extra, "--out", str(tmp_path / "o")], capsys)
    assert expect in err and any(fix in err for fix in (": drop ", ": add ", ": give ")), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--no-ladder", "--multiplicity", "2"], "--multiplicity does nothing without a ladder"),
        (["--loss", "mse", "--x-key", "inputs"], "--x-key and --loss do nothing with --tms-critical"),
        (["--preconditioner", "rmsprop"], "--preconditioner does nothing with HMC (--sampler auto on the p"),
        (["--sampler", "mala", "--num-leapfrog", "4"], "--num-leapfrog does nothing with --sampler mala"),
        (["--grad-mode", "loop"], "--grad-mode does nothing with --tms-critical"),
    ],
)
def test_idle_flag_is_refused_at_a_critical_point(tmp_path, capsys, monkeypatch, extra, expect):
    _nothing_runs(monkeypatch)
    err = _refused(["llc", "--tms-critical", "5", "--c", "5", *extra, "--out", str(tmp_path / "o")], capsys)
    assert expect in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--ladder", "1", "2"], "--ladder fits one checkpoint at a time"),
        (["--batch-size", "10", "--no-reuse-calibration"], "--no-reuse-calibration does nothing with SGLD"),
        (["--step-size", "0.001", "--no-reuse-calibration"], "--no-reuse-calibration does nothing with --st"),
    ],
)
def test_idle_flag_is_refused_in_a_series(files, tmp_path, capsys, monkeypatch, extra, expect):
    _nothing_runs(monkeypatch)
    series = _base(files, files["ckpt"], files["ckpt2"])
    err = _refused([*series, *TINY, *extra, "--out", str(tmp_path / "o")], capsys)
    assert expect in err, err


@pytest.mark.parametrize("excess", [0, 1])
def test_batch_size_of_the_full_batch_is_refused(files, tmp_path, capsys, monkeypatch, excess):
    """A minibatch of all the rows (or more) is the full batch: refused once the rows are known, before any
    sampling; one row fewer is a minibatch and goes on to the estimate."""
    _nothing_runs(monkeypatch, load=True)
    size = ROWS + excess
    err = _refused([*_base(files), *TINY, "--batch-size", str(size), "--out", str(tmp_path / "o")], capsys)
    assert f"--batch-size {size} is not below the {ROWS} rows" in err and "full batch" in err, err
    assert "drop --batch-size" in err
    with pytest.raises(AssertionError, match="the refusal should have come before this"):
        main([*_base(files), *TINY, "--batch-size", str(ROWS - 1), "--out", str(tmp_path / "o2")])


def test_batch_size_of_the_whole_empirical_sample_is_refused(tmp_path, capsys, monkeypatch):
    _nothing_runs(monkeypatch)
    monkeypatch.setattr(llc_command, "from_critical_point", lambda *a, **k: pytest.fail("potential built"))
    n = 500
    err = _refused(["llc", "--tms-critical", "5", "--c", "5", "--potential", "empirical", "--n", str(n),
                    "--batch-size", str(n), "--out", str(tmp_path / "o")], capsys)
    assert f"--batch-size {n} is not below the {n} rows" in err and "full batch" in err, err


# ------------------------------------------------------------------------------ 2. flags, not field names
_FIELDS = [f for f in LLCConfig.field_names() if "_" in f]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--num-chains", "0"], "--num-chains must be an integer >= 1"),
        (["--num-chains", "1"], "--num-chains 1 can never meet the R-hat target"),
        (["--max-draws", "5"], "--max-draws must be an integer >= 10"),
        (["--step-size=-1"], "--step-size must be a finite positive number"),
        (["--sampler", "mala", "--batch-size", "10"], "use --sampler sgld or no --batch-size"),
        (["--sampler", "hmc", "--preconditioner", "rmsprop"], "metric instead (--adapt-metric)"),
        (["--ladder", "1"], "--ladder needs at least two distinct nbeta multipliers"),
        (["--nbeta", "-3"], "--nbeta must be a finite positive number"),
    ],
)
def test_config_errors_name_the_flags(files, tmp_path, capsys, monkeypatch, extra, expect):
    _nothing_runs(monkeypatch)
    num_draws = [] if extra[:2] == ["--num-chains", "1"] else ["--num-draws", "40"]
    err = _refused([*_base(files), *num_draws, *extra, "--out", str(tmp_path / "o")], capsys)
    assert expect in err, err
    for field in _FIELDS:  # no Python field name is left
        assert not re.search(rf"(?<![\w-]){field}\b", err), (field, err)


def test_cli_spelling_leaves_prose_and_paths_alone():
    fields = {"nbeta", "ladder", "step_size", "batch_size", "max_draws", "adapt_metric"}
    spell = llc_command.cli_spelling
    assert spell("ladder needs two distinct nbeta multipliers", fields) == (
        "--ladder needs two distinct nbeta multipliers")
    assert spell("cannot read /runs/step_size/ckpt.pt or step_size.pt", fields) == (
        "cannot read /runs/step_size/ckpt.pt or step_size.pt")
    assert spell("raise max_draws (--max-draws)", fields) == "raise --max-draws"
    assert spell("adapt_metric=False and batch_size=None", fields) == "--no-adapt-metric and no --batch-size"


def test_help_and_printed_summary_name_the_flags(files, tmp_path, capsys, monkeypatch):
    """The help of every setting and the summary a run prints speak of --max-draws, not max_draws."""
    with pytest.raises(SystemExit):
        main(["llc", "--help"])
    text = capsys.readouterr().out
    assert "--max-draws); with --batch-size" in text
    for field in (f for f in _FIELDS if "_" in f):
        assert not re.search(rf"(?<![\w-]){field}\b", text), field
    monkeypatch.setenv("SLT_TMS_NO_PROGRESS", "1")
    assert main([*_base(files), *TINY, "--out", str(tmp_path / "o")]) == 0  # 40 draws: not converged
    out = capsys.readouterr().out
    assert "NOT TRUSTWORTHY" in out and "raise --num-draws" in out, out
    assert "num_draws" not in out
    # the saved result keeps the Python names (it is read by Python)
    assert "raise num_draws" in json.loads((tmp_path / "o" / "llc.json").read_text())["flags"][0]


# ------------------------------------------------------------------------------ 3. data advice for data files
def test_numpy_arrays_in_a_pt_data_file_get_data_advice(files, tmp_path, capsys, monkeypatch):
    """torch.save of numpy arrays is refused by weights-only loading (never unpickled otherwise): the
    message says how to save data, not a checkpoint's state_dict."""
    path = tmp_path / "np_data.pt"
    torch.save({"x": files["x"].numpy(), "y": files["y"].numpy()}, path)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    with pytest.raises(ValueError) as info:
        load_data(path)
    msg = str(info.value)
    assert "numpy arrays" in msg and "torch.as_tensor" in msg and ".npz" in msg and ".safetensors" in msg, msg
    assert "state_dict" not in msg and "weights_only=False" not in msg and "\n" not in msg
    assert calls and all(w is True for w in calls)
    _nothing_runs(monkeypatch, load=True)
    err = _refused(["llc", str(files["ckpt"]), "--model", f"{files['factory']}:make", "--data", str(path),
                    *TINY, "--out", str(tmp_path / "o")], capsys)
    assert "torch.as_tensor" in err and "state_dict" not in err, err


def test_code_in_a_pt_data_file_is_refused_with_data_advice_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil_data.pt"
    torch.save({"x": Payload(), "y": torch.zeros(3)}, path)
    with pytest.raises(ValueError) as info:
        load_data(path)
    msg = str(info.value)
    assert "Python objects" in msg and "torch.as_tensor" in msg and "state_dict" not in msg, msg
    assert not marker.exists()


# ------------------------------------------------------------------------------ 4. steps of a series
def test_mixed_numbered_and_unnumbered_names_are_refused(files, tmp_path, capsys, monkeypatch):
    _nothing_runs(monkeypatch)
    final = tmp_path / "final.safetensors"
    final.write_bytes(files["ckpt2"].read_bytes())
    err = _refused([*_base(files, files["ckpt"], final), *TINY, "--out", str(tmp_path / "o")], capsys)
    assert "final.safetensors has no step number in its name" in err and "rename" in err, err


def test_unnumbered_names_are_numbered_by_their_order_with_a_note(files, tmp_path, capsys):
    names = ["beta.safetensors", "alpha.safetensors"]  # given in this order: the order is theirs, not sorted
    for nm in names:
        (tmp_path / nm).write_bytes(files["ckpt"].read_bytes())
    out = tmp_path / "o"
    code = main([*_base(files, *(tmp_path / nm for nm in names)), *TINY, "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    rec = json.loads((out / "llc_series.json").read_text())
    assert [r["step"] for r in rec["rows"]] == list(range(len(names)))
    assert [r["checkpoint"] for r in rec["rows"]] == names
    assert "order" in rec["config"]["steps_from"] and "order" in rec["cli"]["steps_from"]
    code = main([*_base(files, *(tmp_path / nm for nm in names)), *TINY, "--out", str(tmp_path / "o2")])
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "note:" in ln]
    assert code == 0 and len(notes) == 1 and "files' order" in notes[0], notes


def test_numbered_names_keep_their_steps_without_a_note(files, tmp_path, capsys):
    out = tmp_path / "o"
    code = main([*_base(files, files["ckpt"], files["ckpt2"]), *TINY, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note:" not in err
    rec = json.loads((out / "llc_series.json").read_text())
    assert [r["step"] for r in rec["rows"]] == [100, 200]
    assert "file name" in rec["config"]["steps_from"]


def test_grad_mode_reaches_the_potential_of_one_checkpoint_and_of_a_series(files, tmp_path, capsys):
    """--grad-mode loop is what the result records for one checkpoint and what every task of a resumable
    series carries; an unknown mode is refused in one line before the data is read."""
    out = tmp_path / "one"
    assert main([*_base(files), *TINY, "--grad-mode", "loop", "--quiet", "--out", str(out)]) == 0
    pot = json.loads((out / "llc.json").read_text())["config"]["potential"]
    assert pot["grad_mode"] == "loop" and pot["grad_mode_requested"] == "loop"
    series = tmp_path / "series"
    argv = [*_base(files, files["ckpt"], files["ckpt2"]), *TINY, "--grad-mode", "loop", "--quiet"]
    assert main([*argv, "--out", str(series)]) == 0
    tasks = [json.loads(p.read_text()) for p in (series / "series").glob("*.json") if p.name != "sweep.json"]
    assert tasks and all(t["task"]["grad_mode"] == "loop" for t in tasks), tasks
    capsys.readouterr()
    err = _refused([*_base(files), *TINY, "--grad-mode", "fast", "--out", str(tmp_path / "o")], capsys)
    assert "unknown --grad-mode 'fast'; allowed: auto, vmap, loop" in err


def test_checkpoints_saved_through_a_wrapper_load_with_one_warning(files, tmp_path, capsys):
    """A DataParallel / torch.compile key prefix is removed where the rest fits the model exactly, said in
    one warning line for one checkpoint and in one for a whole series; the numbers are the plain files'."""
    from safetensors.torch import load_file

    wrapped = []
    for c in (files["ckpt"], files["ckpt2"]):
        p = tmp_path / ("dp_" + c.name)
        save_file({"module." + k: v for k, v in load_file(str(c)).items()}, str(p))
        wrapped.append(p)
    one = [*_base(files, wrapped[0]), *TINY, "--quiet"]
    assert main([*one, "--out", str(tmp_path / "one")]) == 0
    err = capsys.readouterr().err
    assert err.count("every key carries the prefix 'module.'") == 1, err
    assert "slt-tms llc: warning: checkpoint dp_ckpt_100.safetensors: every key" in err
    assert main([*_base(files), *TINY, "--quiet", "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    got, want = (json.loads((tmp_path / d / "llc.json").read_text())["llc"] for d in ("one", "plain"))
    assert got == want
    assert main([*_base(files, *wrapped), *TINY, "--quiet", "--out", str(tmp_path / "series")]) == 0
    err = capsys.readouterr().err
    assert err.count("every key carries the prefix 'module.'") == 1, err
    assert "2 checkpoints (dp_ckpt_100.safetensors ... dp_ckpt_200.safetensors)" in err


def test_a_language_model_from_the_shell_with_loss_causal_lm(tmp_path, capsys):
    """--loss causal_lm: token ids under x, the labels under y (here the ids themselves), a factory whose
    model maps ids (n, T) to logits (n, T, V); the result records the loss."""
    (tmp_path / "lm.py").write_text(
        "import torch\nfrom torch import nn\n\nclass LM(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.emb = nn.Embedding(6, 4)\n        self.out = nn.Linear(4, 6)\n\n"
        "    def forward(self, input_ids):\n"
        "        return self.out(torch.tanh(self.emb(input_ids).cumsum(1)))\n\n"
        "def make():\n    torch.manual_seed(0)\n    return LM()\n"
    )
    ids = torch.randint(0, 6, (40, 5), generator=torch.Generator().manual_seed(0))
    np.savez(tmp_path / "tokens.npz", x=ids.numpy(), y=ids.numpy())
    ns: dict = {}
    exec((tmp_path / "lm.py").read_text(), ns)
    save_file(ns["make"]().state_dict(), str(tmp_path / "lm.safetensors"))
    argv = ["llc", str(tmp_path / "lm.safetensors"), "--model", f"{tmp_path / 'lm.py'}:make", "--data",
            str(tmp_path / "tokens.npz"), "--loss", "causal_lm", *TINY, "--quiet",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "o" / "llc.json").read_text())
    assert rec["config"]["potential"]["loss"] == "causal_lm" and math.isfinite(rec["llc"])


def test_a_series_runs_in_step_order_whatever_the_shell_gives(files, tmp_path, capsys):
    """ckpt_50 sorts after ckpt_200 in a shell glob: the series (its rows, figure and the calibration from
    the latest checkpoint) follows the steps in the names instead."""
    import shutil

    shutil.copy(files["ckpt"], tmp_path / "ckpt_50.safetensors")
    glob = str(tmp_path / "ckpt_*.safetensors")  # ckpt_100, ckpt_200, ckpt_50 in the shell's order
    out = tmp_path / "s"
    assert main(["llc", glob, "--model", f"{files['factory']}:make", "--data", str(files["data"]), *TINY,
                 "--quiet", "--out", str(out)]) == 0
    rec = json.loads((out / "llc_series.json").read_text())
    assert [r["step"] for r in rec["rows"]] == [50, 100, 200]
    csv_steps = [ln.split(",")[0] for ln in (out / "llc_series.csv").read_text().splitlines()[1:]]
    assert csv_steps == ["50", "100", "200"]
    from slt_tms.estimators import LLCResult

    first = LLCResult.from_netcdf(out / "checkpoints" / "ckpt_50.nc")
    assert first.config["calibration_used"]["source"]["step"] == 200


def test_a_polygon_larger_than_the_features_is_refused_naming_both_flags(tmp_path, capsys):
    err = _refused(["llc", "--tms-critical", "7", "--c", "6", "--out", str(tmp_path / "o")], capsys)
    assert "--tms-critical 7: a 7-gon needs 2 <= 7 <= --c" in err and "got --c 6" in err
    assert not (tmp_path / "o").exists()


def test_a_single_estimate_into_a_series_directory_says_it_goes_beside_it(files, tmp_path, capsys):
    out = tmp_path / "o"
    argv = [*_base(files), *TINY, "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert "already holds" not in capsys.readouterr().err
    assert main([*_base(files, files["ckpt"], files["ckpt2"]), *TINY, "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: {out} already holds llc.json, llc.nc of an earlier single estimate" in err
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "already holds llc_series.csv, llc_series.json of an earlier series of checkpoints" in err
    assert "already holds llc.json and llc.nc of an earlier estimate; this run replaces them" in err
    assert {"llc.json", "llc.nc", "llc_series.csv", "llc_series.json"} <= {p.name for p in out.iterdir()}


def test_steps_are_read_after_step_words_and_repeated_steps_are_refused(files, tmp_path, capsys, monkeypatch):
    """step20_lr1e-3.pt is step 20, not the 3 of its learning rate; two names that read as one step are
    refused before any work (every row read step 3 and the calibration came from the untrained one)."""
    import shutil

    from slt_tms.estimators.series import step_from_name

    names = ("step5_lr1e-3.pt", "step300_lr1e-3.pt", "epoch-7_loss0.31.pt", "ckpt_step000120.safetensors",
             "model_500.pt")
    assert [step_from_name(n) for n in names] == [5, 300, 7, 120, 500]
    d = tmp_path / "twice"
    d.mkdir()
    for nm in ("run1_lr3.safetensors", "run2_lr3.safetensors"):
        shutil.copy(files["ckpt"], d / nm)
    _nothing_runs(monkeypatch)
    err = _refused([*_base(files, *sorted(d.iterdir())), *TINY, "--out", str(tmp_path / "o")], capsys)
    assert "both read as training step 3" in err and "name each checkpoint with its own step" in err
    from slt_tms.estimators.series import estimate_llc_series

    with pytest.raises(ValueError, match="both read as training step 3"):  # the Python API alike
        estimate_llc_series(sorted(d.iterdir()), lambda: torch.nn.Linear(3, 1), (files["x"], files["y"]))
