"""Checkpoint and data-file I/O: bit-exact round trips, clear errors, and no code execution from pickles."""

import io
import json
import os
import pickle
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import slt_tms.io as sio
from slt_tms.io import load_checkpoint, load_state_dict_file, load_tensors, save_checkpoint, user_models
from slt_tms.tms import TMS, num_params

C, R = 5, 2
D = num_params(C, R)


def _w(*lead, dtype=torch.float32, seed=0):
    return torch.randn(*lead, D, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class _Payload:
    """Unpickling this object calls open(marker, "w"), i.e. creates the marker file (harmless, visible)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("lead", [(), (3,), (2, 4)])
def test_checkpoint_round_trip_bit_exact(tmp_path, dtype, lead):
    w = _w(*lead, dtype=dtype)
    w[..., 0] = float("-0.0")  # signed zero and subnormals survive too
    w[..., 1] = torch.finfo(dtype).tiny / 4
    path = save_checkpoint(tmp_path / "a.safetensors", w, c=C, r=R, activation="swish", gamma=0.1 + 0.2,
                           seed=2**62 + 1, step=123, extra={"note": "x", "lr": 0.005})
    w2, meta = load_checkpoint(path)
    assert w2.dtype == dtype and w2.shape == w.shape
    bits = {torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}[dtype]
    assert torch.equal(w2.view(bits), w.view(bits))  # identical bit patterns, not just equal values
    assert meta == {"c": C, "r": R, "activation": "swish", "gamma": 0.1 + 0.2, "seed": 2**62 + 1,
                    "step": 123, "format_version": 1, "extra": {"note": "x", "lr": 0.005}}


def test_checkpoint_from_module_and_into_module(tmp_path):
    model = TMS(C, R, generator=torch.Generator().manual_seed(3))
    p = save_checkpoint(tmp_path / "m.safetensors", model, c=C, r=R)
    w, meta = load_checkpoint(p)
    assert torch.equal(w, model.flat()) and meta["seed"] is None and meta["step"] is None
    # the file is a TMS state_dict: plain safetensors readers can load it into the module
    from safetensors.torch import load_file

    clone = TMS(C, R)
    clone.load_state_dict(load_file(p))
    assert torch.equal(clone.flat(), model.flat())


def test_pt_state_dict_is_accepted(tmp_path):
    model = TMS(C, R, generator=torch.Generator().manual_seed(4))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    w, meta = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(w, model.flat())
    assert (meta["c"], meta["r"], meta["activation"], meta["seed"]) == (C, R, "relu", None)  # inferred
    torch.save({**model.state_dict(), "meta": {"c": C, "r": R, "activation": "linear", "step": 7}},
               tmp_path / "m2.pt")
    _, meta2 = load_checkpoint(tmp_path / "m2.pt")
    assert meta2["activation"] == "linear" and meta2["step"] == 7


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, _w(), c=C, r=R)
    before = path.read_bytes()

    def failing_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full (simulated)")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, _w(seed=1), c=C, r=R)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


# ------------------------------------------------------------------------------------------ save errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "x.pt"}, "must end in .safetensors"),
        ({"w": torch.zeros(D + 1)}, r"shape \(\.\.\., 15\)"),
        ({"w": torch.zeros(D, dtype=torch.int32)}, "float tensor"),
        ({"w": [0.0] * D}, "flat parameter Tensor or a TMS module"),
        ({"w": TMS(C + 1, R)}, "the module has c=6"),
        ({"c": 0}, "integer >= 1"),
        ({"activation": "gelu"}, "allowed: relu, linear, swish"),
        ({"seed": -3}, "seed must be a non-negative integer or None"),
        ({"extra": {"x": object()}}, "JSON-serialisable"),
        ({"extra": {"x": float("nan")}}, "JSON-serialisable"),
    ],
)
def test_save_validation(tmp_path, kwargs, match):
    args = {"path": "ok.safetensors", "w": _w(), "c": C, "r": R, "activation": "relu", "seed": 0,
            "extra": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / args.pop("path"), args.pop("w"), **args)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ load errors
def test_missing_file(tmp_path):
    for fn in (load_checkpoint, load_tensors, load_state_dict_file):
        with pytest.raises(FileNotFoundError, match="no such file"):
            fn(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("fn", [load_checkpoint, load_tensors, load_state_dict_file])
def test_unknown_suffix(tmp_path, fn):
    p = tmp_path / "w.txt"
    p.write_text("1 2 3")
    with pytest.raises(ValueError, match=r"unknown file type '\.txt'; allowed suffixes: \.safetensors"):
        fn(p)


def test_corrupt_and_truncated_safetensors(tmp_path):
    good = save_checkpoint(tmp_path / "good.safetensors", _w(), c=C, r=R)
    raw = good.read_bytes()
    cases = {
        "empty": b"",
        "junk": bytes(range(256)) * 4,
        "truncated": raw[: len(raw) - 9],
        "header_only": raw[:8],
        "bad_header_len": (10**12).to_bytes(8, "little") + raw[8:],
    }
    for name, data in cases.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(data)
        for fn in (load_checkpoint, load_tensors, load_state_dict_file):
            with pytest.raises(ValueError, match="not a valid safetensors file"):
                fn(p)


def test_corrupt_and_truncated_pt(tmp_path):
    torch.save(TMS(C, R).state_dict(), tmp_path / "good.pt")
    raw = (tmp_path / "good.pt").read_bytes()
    for name, data in {"empty": b"", "truncated": raw[: len(raw) // 2], "junk": b"\x80\x04junk" * 10}.items():
        p = tmp_path / f"{name}.pt"
        p.write_bytes(data)
        for fn in (load_checkpoint, load_tensors, load_state_dict_file):
            with pytest.raises(ValueError, match=r"(corrupt|truncated)"):
                fn(p)


def _save_raw(path, tensors, **meta):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={k: str(v) for k, v in meta.items()})
    return path


def test_missing_keys(tmp_path):
    W, b = torch.zeros(R, C), torch.zeros(C)
    p = _save_raw(tmp_path / "nob.safetensors", {"W": W}, c=C, r=R)
    with pytest.raises(ValueError, match=r"missing tensor\(s\) 'b'.*'W' of shape \(\.\.\., r, c\)"):
        load_checkpoint(p)
    torch.save({"weight": W}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"missing tensor\(s\) 'W', 'b'.*found keys \['weight'\]"):
        load_checkpoint(tmp_path / "x.pt")
    # a file claiming the slt_tms format must carry every metadata key
    p = _save_raw(tmp_path / "nometa.safetensors", {"W": W, "b": b}, format=sio.CHECKPOINT_FORMAT,
                  format_version=1, c=C, r=R)
    with pytest.raises(ValueError, match="metadata lacks 'activation', 'gamma', 'seed', 'step'"):
        load_checkpoint(p)


@pytest.mark.parametrize(
    ("tensors", "meta", "match"),
    [
        ({"W": torch.zeros(R, C), "b": torch.zeros(C + 1)}, {}, r"expected 'W' \(2, 5\) and 'b' \(5,\)"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C)}, {"c": 4}, r"wrong shapes for c=4, r=2"),
        ({"W": torch.zeros(3, R, C), "b": torch.zeros(2, C)}, {},
         r"expected 'W' \(3, 2, 5\) and 'b' \(3, 5\)"),
        ({"W": torch.zeros(C), "b": torch.zeros(C)}, {}, r"'W' must have shape \(\.\.\., r, c\)"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C, dtype=torch.float64)}, {}, "share one floating dtype"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C)}, {"activation": "gelu"}, "allowed: relu, linear"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C)}, {"gamma": "-1"}, "gamma' must be a positive"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C)}, {"step": "1.5"}, "'step' must be an integer"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C)}, {"format_version": "99"}, "Upgrade slt_tms"),
        ({"W": torch.zeros(R, C), "b": torch.zeros(C)}, {"extra": "{"}, "not valid JSON"),
    ],
)
def test_wrong_shapes_and_metadata(tmp_path, tensors, meta, match):
    p = _save_raw(tmp_path / "x.safetensors", tensors, **meta)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(p)


# ------------------------------------------------------------------------------------------ malicious pickle
def test_payload_is_real_negative_control(tmp_path):
    """The crafted pickle really runs code when unpickled unsafely (so the next test can fail)."""
    marker = tmp_path / "pwned"
    data = pickle.dumps({"W": _Payload(marker)})
    pickle.loads(data)  # unsafe on purpose: this is what weights_only=True must prevent
    assert marker.exists()


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_never_executes(tmp_path, container):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    obj = {"W": _Payload(marker), "b": torch.zeros(C)}
    if container == "torch_zip":
        torch.save(obj, evil)
    else:
        evil.write_bytes(pickle.dumps(obj, protocol=2))
    assert not marker.exists()
    for fn in (load_checkpoint, load_tensors, load_state_dict_file):
        with pytest.raises(ValueError, match=r"contains Python objects \(io.open\).*weights_only=True"):
            fn(evil)
        assert not marker.exists()


# ------------------------------------------------------------------------------------------ data files
def test_load_tensors_formats(tmp_path):
    x = torch.rand(10, C, generator=torch.Generator().manual_seed(0))
    y = torch.arange(10)
    save_file({"x": x, "y": y}, str(tmp_path / "d.safetensors"))
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    torch.save(x, tmp_path / "bare.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    for name in ("d.safetensors", "d.pt", "d.npz"):
        got = load_tensors(tmp_path / name)
        assert sorted(got) == ["x", "y"] and torch.equal(got["x"], x) and torch.equal(got["y"], y)
    assert torch.equal(load_tensors(tmp_path / "bare.pt")["data"], x)


def test_load_tensors_rejects_objects(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="object arrays are refused"):
        load_tensors(tmp_path / "obj.npz")
    np.savez(tmp_path / "str.npz", x=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="only numeric arrays"):
        load_tensors(tmp_path / "str.npz")
    torch.save({"x": torch.zeros(2), "n": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="entries that are not tensors: n"):
        load_tensors(tmp_path / "mixed.pt")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_tensors(tmp_path / "bad.npz")


def test_load_state_dict_file(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    sd = net.state_dict()
    torch.save(sd, tmp_path / "a.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "a.safetensors"))
    torch.save({"epoch": 4, "optimizer": {"lr": 0.1}, "model_state_dict": sd}, tmp_path / "nested.pth")
    for name in ("a.pt", "a.safetensors", "nested.pth"):
        got = load_state_dict_file(tmp_path / name)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
        net2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        net2.load_state_dict(got)
    opt = torch.optim.Adam(net.parameters()).state_dict()
    torch.save({"net": sd, "optimizer": opt, "epoch": 4}, tmp_path / "other_name.pt")
    got = load_state_dict_file(tmp_path / "other_name.pt")
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    torch.save({"net": sd, "ema": sd, "epoch": 4}, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"several state dicts \('net', 'ema'\): save the one"):
        load_state_dict_file(tmp_path / "two.pt")
    torch.save({"epoch": 4, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(ValueError, match="parameter name -> tensor"):
        load_state_dict_file(tmp_path / "nostate.pt")
    torch.save(torch.zeros(3), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="must hold a dict"):
        load_state_dict_file(tmp_path / "bare.pt")


def test_extra_metadata_is_json(tmp_path):
    p = save_checkpoint(tmp_path / "e.safetensors", _w(), c=C, r=R, extra={"args": {"lr": 0.01}})
    from safetensors import safe_open

    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["extra"]) == {"args": {"lr": 0.01}}
    assert meta["format"] == sio.CHECKPOINT_FORMAT and meta["format_version"] == "1"


# ------------------------------------------------------------------------------------------ npz headers
def _npy(shape, descr="<f8", data=b"", fortran=False):
    """The bytes of a .npy file with the given header and (possibly too little) data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue() + data


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_npz_huge_declared_shape_refused_before_allocating(tmp_path):
    """A 100-byte .npz whose header declares 10**12 float64s (8 TB): one line, nothing allocated.

    Before the fix numpy allocated the declared array first and raised MemoryError."""
    p = _zip(tmp_path / "huge.npz", {"x.npy": _npy((10**12,), data=b"\0" * 8)})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            load_tensors(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "\n" not in msg and "huge.npz" in msg and "'x'" in msg
    assert "(1000000000000,)" in msg and "8 bytes" in msg
    assert peak < 10 * 2**20  # bytes traced while loading (numpy's allocations are traced)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_truncated_member_reported_as_truncated(tmp_path, compression):
    """A .npy member cut in the middle of its data (with a consistent zip around it) is 'truncated'.

    Before the fix numpy's 'EOF: reading array data' was reported as 'object arrays are refused'."""
    full = _npy((100,), data=np.arange(100.0).tobytes())
    p = _zip(tmp_path / "cut.npz", {"x.npy": full[: len(full) - 400]}, compression)
    with pytest.raises(ValueError, match=r"truncated") as info:
        load_tensors(p)
    assert "object arrays" not in str(info.value) and "\n" not in str(info.value)


def test_npz_members_that_are_not_numeric_arrays(tmp_path):
    ok = np.arange(3.0)
    buf = io.BytesIO()
    np.save(buf, ok)
    p = _zip(tmp_path / "extra.npz", {"x.npy": buf.getvalue(), "notes.txt": b"hello"})
    with pytest.raises(ValueError, match=r"'notes.txt' is not a \.npy array"):
        load_tensors(p)
    p = _zip(tmp_path / "obj.npz", {"x.npy": _npy((2,), descr="|O", data=b"\0" * 16)})
    with pytest.raises(ValueError, match="object arrays are refused"):
        load_tensors(p)
    # Fortran order, big-endian and compressed members are read like numpy reads them
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    np.savez_compressed(tmp_path / "f.npz", a=np.asfortranarray(a), b=a)
    got = load_tensors(tmp_path / "f.npz")
    assert torch.equal(got["a"], torch.from_numpy(a.astype("<i4"))) and torch.equal(got["b"], got["a"])


# ------------------------------------------------------------------------------------------ pickle refusal
def test_refused_pickle_names_the_object_not_torch_advice(tmp_path):
    """The message names what the file holds and never relays torch's 'weights_only=False' advice."""
    torch.save({"W": _Payload(tmp_path / "pwned"), "b": torch.zeros(C)}, tmp_path / "evil.pt")
    torch.save({"W": np.zeros(3)}, tmp_path / "numpy.pt")
    cases = (("evil.pt", "io.open", "Python objects"), ("numpy.pt", "numpy", "numpy arrays"))
    for name, what, holds in cases:
        for fn in (load_checkpoint, load_tensors, load_state_dict_file):
            with pytest.raises(ValueError) as info:
                fn(tmp_path / name)
            msg = str(info.value)
            assert "\n" not in msg and what in msg
            # a data file (load_tensors) is told how to save data, a checkpoint how to save weights
            advice = "torch.as_tensor" if fn is load_tensors else "save a plain state_dict or safetensors"
            assert f"contains {holds}" in msg and advice in msg
            assert "weights_only=False" not in msg and "likely succeed" not in msg
            assert "\x1b" not in msg  # no terminal escape codes from torch's message
    assert not (tmp_path / "pwned").exists()


class _SystemCall:
    """Unpickles to ``os.system(...)``: torch refuses it as a global of a blocked module (another wording)."""

    def __reduce__(self):
        return (os.system, ("true",))


def test_blocked_module_and_torchscript_archive_get_their_own_message(tmp_path):
    """A call into a blocked module (os.system) is refused as Python objects, not as a corrupt file, and a
    TorchScript archive is named as one with the flags that load it; neither relays torch's advice."""
    torch.save({"W": _SystemCall()}, tmp_path / "system.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit.script is deprecated; archives still load
        torch.jit.script(nn.Linear(3, 1)).save(str(tmp_path / "scripted.pt"))
    for fn in (load_checkpoint, load_tensors, load_state_dict_file):
        with pytest.raises(ValueError) as info:
            fn(tmp_path / "system.pt")
        msg = str(info.value)
        assert "contains Python objects" in msg and "system" in msg and "corrupt" not in msg
        assert "weights_only=False" not in msg and "likely succeed" not in msg
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's "looks like a TorchScript archive" warning is not shown
            with pytest.raises(ValueError) as info:
                fn(tmp_path / "scripted.pt")
        msg = str(info.value)
        # a model file given as data is told it is no data file, not how to load it as a model
        fix = "not a data file" if fn is load_tensors else "--torchscript --trust-torchscript"
        assert "TorchScript archive" in msg and fix in msg
        assert "corrupt" not in msg and "weights_only=False" not in msg


# ------------------------------------------------------------------------------------------ user models
class _LoudScript(torch.nn.Module):
    """Scripted; its ``__setstate__`` runs inside ``torch.jit.load``, printing a marker and counting."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.loads = 0

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.loads, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, int, bool]):
        print("SLT_TMS_ARCHIVE_CODE_RAN")
        self.weight = state[0]
        self.loads = state[1] + 1
        self.training = state[2]


@pytest.fixture
def loud_archive(tmp_path):
    p = tmp_path / "loud.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_LoudScript()), str(p))
    return p


def test_user_model_loaders_live_in_io():
    from slt_tms.commands import llc

    for name in ("load_factory", "load_model", "load_torchscript", "load_data", "sha256", "LOSSES"):
        assert (name in user_models.__all__ and getattr(user_models, name).__doc__) or name == "LOSSES"
    # the command uses the io functions themselves, not copies
    assert llc.load_model is user_models.load_model and llc.load_data is user_models.load_data
    assert not hasattr(llc, "_sha256") and not hasattr(llc, "_state_dict_mismatch")


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_torchscript_refused_without_trust_and_its_code_does_not_run(loud_archive, capfd):
    for call in (lambda: user_models.load_torchscript(loud_archive),
                 lambda: user_models.load_model(loud_archive, torchscript=True)):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and "--trust-torchscript" in msg and "runs when it is loaded" in msg
    assert "SLT_TMS_ARCHIVE_CODE_RAN" not in capfd.readouterr().out
    # negative control: trusting the archive runs its code while loading (so the check above can fail)
    mod = user_models.load_model(loud_archive, torchscript=True, trust_torchscript=True)
    assert "SLT_TMS_ARCHIVE_CODE_RAN" in capfd.readouterr().out and mod.loads == 1
    assert torch.equal(mod(torch.ones(2)), torch.ones(2)) and not mod.training


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_cli_torchscript_needs_the_trust_flag(loud_archive, tmp_path, capfd):
    from slt_tms.cli import main

    np.savez(tmp_path / "d.npz", x=np.ones((8, 2), "float32"), y=np.ones((8, 2), "float32"))
    args = ["llc", str(loud_archive), "--torchscript", "--data", str(tmp_path / "d.npz"), "--step-size",
            "1e-4", "--num-chains", "2", "--num-draws", "20", "--num-burnin", "5", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    cap = capfd.readouterr()
    assert cap.err.startswith("slt-tms: error: refusing to load the TorchScript archive loud.pt")
    assert cap.err.count("\n") == 1 and "--trust-torchscript" in cap.err
    assert "SLT_TMS_ARCHIVE_CODE_RAN" not in cap.out and not (tmp_path / "o").exists()
    assert main([*args, "--trust-torchscript", "--out", str(tmp_path / "o")]) == 0
    assert "SLT_TMS_ARCHIVE_CODE_RAN" in capfd.readouterr().out and (tmp_path / "o" / "llc.json").is_file()


def test_cli_help_tells_the_torchscript_truth(capsys):
    from slt_tms.cli import main

    with pytest.raises(SystemExit):
        main(["llc", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--trust-torchscript" in text
    assert "code runs when it is loaded and evaluated" in text and "only load archives you trust" in text
    assert "no Python" not in text and "no model code" not in text
    from slt_tms.commands import llc

    for doc in (llc.__doc__, user_models.__doc__, user_models.load_model.__doc__,
                user_models.load_torchscript.__doc__):
        assert "no Python pickle" not in doc and "no model code" not in doc and "no Python objects" not in doc


def test_sha256_and_load_data(tmp_path):
    import hashlib

    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((4, 2), "float32"), y=np.arange(4))
    assert user_models.sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    x, y = user_models.load_data(p, loss="cross_entropy")
    assert x.shape == (4, 2) and y.dtype == torch.int64
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        user_models.load_data(p, loss="hinge")
    with pytest.raises(FileNotFoundError, match="data file not found"):
        user_models.load_data(tmp_path / "nope.npz")


# ------------------------------------------------------------------ checkpoints saved through a wrapper
def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")  # torch.compile's import
@pytest.mark.parametrize(
    ("wrap", "prefix"),
    [
        (nn.DataParallel, "module."),
        (torch.compile, "_orig_mod."),
        (lambda m: nn.DataParallel(torch.compile(m)), "module._orig_mod."),
        (lambda m: nn.ModuleDict({"model": m}), "model."),  # a training framework's attribute
    ],
)
def test_a_wrappers_key_prefix_is_removed_where_the_rest_fits_exactly(tmp_path, wrap, prefix):
    net = _mlp()
    saved = wrap(net).state_dict()
    assert all(k.startswith(prefix) for k in saved)
    state, found = user_models.match_state_dict(_mlp(), dict(saved))
    assert found == prefix and set(state) == set(net.state_dict())
    torch.save(saved, tmp_path / "w.pt")
    with pytest.warns(UserWarning, match=f"prefix '{prefix}'"):
        loaded = user_models.load_model(tmp_path / "w.pt", model=_mlp)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_a_prefix_is_not_removed_when_the_rest_does_not_fit():
    net = _mlp()
    other = nn.DataParallel(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))).state_dict()
    assert user_models.match_state_dict(net, dict(other)) == (dict(other), None)  # shapes differ
    mixed = {**{"module." + k: v for k, v in net.state_dict().items()}, "step": torch.tensor(3)}
    assert user_models.match_state_dict(net, mixed)[1] is None  # not every key carries it
    plain = net.state_dict()
    assert user_models.match_state_dict(net, plain) == (plain, None)


class _Tied(nn.Module):
    """A language-model head tied to its embedding (one Parameter under two names)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(self.emb(x))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_tied_weights_saved_once_are_filled_from_their_twin(tmp_path, prefix):
    """safetensors' save_model and HuggingFace's save_pretrained write a tied tensor once: the missing name
    is filled from its twin (also beside a wrapper's prefix); an untied missing name still fails."""
    from safetensors.torch import save_model

    torch.manual_seed(1)
    net = _Tied()
    save_model(net, str(tmp_path / "once.safetensors"))  # keeps one of the two names
    once = load_state_dict_file(tmp_path / "once.safetensors")
    assert len(once) == 1
    torch.save({prefix + k: v for k, v in once.items()}, tmp_path / "once.pt")
    ctx = pytest.warns(UserWarning, match="prefix 'module.'") if prefix else warnings.catch_warnings()
    with ctx:
        loaded = user_models.load_model(tmp_path / "once.pt", model=_Tied)
    assert torch.equal(loaded.emb.weight, net.emb.weight) and loaded.out.weight is loaded.emb.weight
    lin = _mlp()
    partial = {k: v for k, v in lin.state_dict().items() if k != "2.bias"}
    assert user_models.match_state_dict(_mlp(), partial) == (partial, None)  # not tied: nothing to fill
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"missing in checkpoint: 2\.bias"):
        user_models.load_model(tmp_path / "partial.pt", model=_mlp)


def test_a_factory_that_needs_arguments_is_refused_with_the_wrapper_to_write(tmp_path):
    torch.save(_mlp().state_dict(), tmp_path / "w.pt")

    def make_with_args(width):
        return _mlp()

    with pytest.raises(ValueError, match=r"missing 1 required positional argument.*called without arguments: "
                                         r"wrap it, e\.g\. def make\(\): return make_with_args\("):
        user_models.load_model(tmp_path / "w.pt", model=make_with_args)

    def broken():
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    with pytest.raises(ValueError, match=r"'int' and 'str'$"):  # another TypeError: no such hint
        user_models.load_model(tmp_path / "w.pt", model=broken)
