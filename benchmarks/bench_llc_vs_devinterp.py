r"""Time to a converged LLC estimate: slt_tms (all defaults) vs devinterp 2.0.1 (its documented settings).

Run with the benchmark environment (``benchmarks/setup_bench_env.sh`` builds it)::

    OMP_NUM_THREADS=1 benchmarks/.venv-bench/bin/python benchmarks/bench_llc_vs_devinterp.py

Two measures, for each library on each problem, every measurement in a fresh subprocess (one thread),
which also gives the peak resident memory (``ru_maxrss``):

* **seconds per effective sample**: wall time of the run that produced the estimate / its bulk ESS
  (ArviZ, Vehtari et al. 2021). ONE rule for both libraries: the ESS of a minibatch trace is computed on
  means of 20-draw blocks (as slt_tms does for its own minibatch runs), because step-to-step minibatch
  noise otherwise counts as independent information and inflates the ESS without any mixing; the raw
  ("nominal") ESS is reported beside it.
* **seconds to a 1% standard error**: the run's time x (SE / (0.01 x reference))^2. The Monte-Carlo
  error falls as 1/sqrt(time), so this puts runs that stopped at different precisions on one scale: it
  is the time a user pays for an answer of given precision. It is blind to bias, so the bias against an
  independent reference is printed beside it.

The problems (an ``nn.Module`` at an anchor :math:`w^*` and training rows, identical for both libraries;
the estimand is the localized tempered mean :math:`n\beta\,E_w[L_n(w) - L_n(w^*)]` at
:math:`n\beta = n/\log n` and localization :math:`\gamma = 100`, the value of Lau et al. and of
devinterp's examples):

* ``tms``: the Toy Model of Superposition :math:`x \mapsto \mathrm{ReLU}(W^\top W x + b)`, c = 6, r = 2
  (18 parameters) at the hexagon (the 6-gon critical point), n = 10 000 one-hot rows, loss
  :math:`\frac1n\sum_k\lVert x_k - f(x_k)\rVert^2`.
* ``rrr``: reduced-rank regression, a bias-free linear network 3 -> 2 -> 3 (12 parameters) at a rank-1
  truth, n = 10 000 rows :math:`x \sim N(0, I_3)`, :math:`y = B_0A_0x + \varepsilon`,
  :math:`\varepsilon \sim N(0, I_3)`, MSE loss.
* ``mlp``: an MLP 100-256-256-10 (tanh, 94 218 parameters) at its teacher weights, n = 2 000 rows
  :math:`y = \mathrm{teacher}(x) + 0.1\,\varepsilon`, MSE loss.

References: NumPyro's NUTS on the same rows and anchors, with the losses re-implemented in JAX
(``reference/numpyro_bench_reference.py``, recorded in ``reference/bench_reference.jsonl``); none for
the MLP (NUTS is too slow there).

slt_tms: ``estimate_llc(model, (X, Y), loss=..., localization=100, seed=...)``, nothing else set (the MLP
gets a budget, see ``mlp_problem``): HMC with an adapted step and diagonal metric on the full-batch loss,
sampling in blocks until split R-hat <= 1.01 and ESS >= 400. The loss is ``"mse"`` for the RRR and the
MLP (the named loss a user writes; for the linear RRR it takes the exact sufficient-statistics full batch
of ``slt_tms.potentials.linear``) and the TMS row loss as a callable. The whole call is timed; imports
(ArviZ included, which slt_tms loads lazily) happen before the clock for both libraries. For the TMS a
second row uses the toolkit's own TMS potential (``estimate_llc(kgon(6, 6), X)``: closed-form loss,
one-hot rows through sorted prefix sums), and a third the same with ``num_chains=16``; for the RRR a
second row the module with ``num_chains=16`` (the advice for cheap full-batch potentials).

devinterp: its public ``devinterp.slt.sampling.sample`` (SGLD, chains one after another, traces written
to zarr) with the settings its README documents: ``num_chains=4``, ``batch_size=32``,
``num_burnin_steps=0``, ``lr=0.001``. devinterp has no stopping rule, so ``num_draws`` doubles from 1 000
until the ESS (same rule as ours, first 20% dropped) reaches 400 or the next run would exceed
``--budget`` seconds; only the last run's time is charged. devinterp does not adapt its step; its
documentation asks the user to tune ``lr``. A second row uses the largest ``lr`` of the ladder
``1e-3 / sqrt(10)^k`` (k = 0..4) whose estimate is within 5% (+ 2 combined SE) of the reference: a
search a user without a reference could not make, reported but not charged. Where no NumPyro reference
is recorded (the MLP: NUTS on 94 218 parameters is out of reach here) the reference is slt_tms's
converged full-batch row of the same run (Metropolis-adjusted HMC, no discretisation bias), and the
table says so. devinterp 2.x is built
around language-model ``input_ids``: dataset row ``i`` is served as the token pair ``[i, i]`` and the loss
function looks the row up (the mean over a batch is the same loss as ours).

Writes ``benchmarks/results/llc_vs_devinterp.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in either library (tqdm reads TQDM_*)
os.environ.setdefault("SLT_TMS_NO_PROGRESS", "1")

import numpy as np
import torch
from torch import nn

__all__: list[str] = []

RESULTS = Path(__file__).resolve().parent / "results" / "llc_vs_devinterp.json"
#: NumPyro NUTS references of the estimands (benchmarks/reference/numpyro_bench_reference.py), JSON lines.
REFERENCE = Path(__file__).resolve().parent / "reference" / "bench_reference.jsonl"
LOCALIZATION = 100.0
TARGET_ESS = 400.0


# ------------------------------------------------------------------------------------------- problems
class _TMSModule(nn.Module):
    """The TMS ``relu(W^T W x + b)`` as a plain module (``W`` of shape ``(r, c)``)."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x @ self.W.T) @ self.W + self.b)


def _sq_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row squared error summed over outputs (the TMS loss before the mean over rows)."""
    return (pred - target).square().sum(-1)


def _mse_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row squared error averaged over outputs (``F.mse_loss`` before the mean over rows)."""
    return (pred - target).square().mean(-1)


def tms_problem(seed: int) -> dict[str, Any]:
    from slt_tms.theory.critical_points import kgon
    from slt_tms.tms import OneHotUniform, fixed_dataset

    n = 10_000
    cp = kgon(6, 6)
    X = fixed_dataset(OneHotUniform(6), n, seed=seed).float()
    module = _TMSModule(torch.as_tensor(np.asarray(cp.W), dtype=torch.float32),
                        torch.as_tensor(np.asarray(cp.b), dtype=torch.float32))
    return {"name": "TMS c=6 hexagon (18 params)", "module": module, "X": X, "Y": X, "rows": _sq_rows,
            "n": n, "meta": {"c": 6, "r": 2, "critical_point": cp.name, "n": n,
                             "lambda_theory": float(cp.lambda_theory)}}


def rrr_problem(seed: int) -> dict[str, Any]:
    n = 10_000
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 3, bias=False))
    u = torch.randn(3, 1, generator=g)
    v = torch.randn(1, 3, generator=g)
    with torch.no_grad():  # rank-1 truth B0 A0 = u v: A0 = [v; 0], B0 = [u, 0]
        net[0].weight.copy_(torch.cat([v, torch.zeros(1, 3)]))
        net[1].weight.copy_(torch.cat([u, torch.zeros(3, 1)], dim=1))
    X = torch.randn(n, 3, generator=g)
    with torch.no_grad():
        Y = net(X) + torch.randn(n, 3, generator=g)
    return {"name": "RRR 3-2-3, rank 1 (12 params)", "module": net, "X": X, "Y": Y, "rows": _mse_rows,
            "ours_loss": "mse", "n": n,
            "meta": {"M": 3, "H": 2, "N": 3, "r": 1, "n": n, "lambda_theory": 3.0}}


def mlp_problem(seed: int) -> dict[str, Any]:
    n = 2_000
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(100, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features), generator=g)
            nn.init.normal_(m.bias, std=0.1, generator=g)
    X = torch.randn(n, 100, generator=g)
    with torch.no_grad():
        Y = net(X) + 0.1 * torch.randn(n, 10, generator=g)
    d = sum(p.numel() for p in net.parameters())
    # Full-batch HMC costs ~0.1 s per gradient here: a budget of 250 warmup + at most 250 draws per chain
    # (about 10 minutes) instead of the default 20 000 draws; the result says whether it converged.
    return {"name": f"MLP 100-256-256-10 ({d} params)", "module": net, "X": X, "Y": Y, "rows": _mse_rows,
            "ours_loss": "mse", "n": n,
            "ours_kw": {"num_burnin": 250, "max_draws": 250, "draws_per_block": 250},
            "meta": {"architecture": "100-256-256-10 tanh", "n": n, "d": d, "noise_std": 0.1}}


PROBLEMS = {"tms": tms_problem, "rrr": rrr_problem, "mlp": mlp_problem}

#: Rows per minibatch of the extra MLP row "slt_tms SGLD batch 32" (devinterp's README batch): SGLD with its
#: step set by the bias it causes and the estimate extrapolated to step 0 (docs, Estimators).
MINIBATCH = 32

#: Chains of the extra rows "slt_tms native 16 ch" (TMS) and "slt_tms 16 ch" (RRR): more chains share each
#: batched gradient of a closed-form potential (ESS about 3x per call) at about the cost of 4 (0.1-0.2 ms
#: per call, measured).
NATIVE_MANY_CHAINS = 16


def _nbeta(n: int) -> float:
    return n / math.log(n)


def _anchor_loss(p: dict[str, Any]) -> float:
    with torch.no_grad():
        return float(p["rows"](p["module"](p["X"]), p["Y"]).double().mean())


def _ess_rhat(trace: np.ndarray, minibatch: bool) -> dict[str, float]:
    """Diagnostics of a lambda trace ``(chains, draws)`` by ONE rule for both libraries: ArviZ bulk ESS,
    split R-hat and the standard error slt_tms reports (the larger of the MCSE and sd(chain means) /
    sqrt(chains)); for a minibatch trace on means of 20-draw blocks (the rule slt_tms applies to
    its own minibatch runs: step-to-step minibatch noise otherwise counts as independent information).
    The raw ("nominal") ESS is kept beside it."""
    from slt_tms.estimators.sgld_bias import block_means as _block_means
    from slt_tms.samplers import diagnostics as diag

    xb = _block_means(trace) if minibatch else trace
    return {"ess": diag.ess(xb), "rhat": diag.rhat(xb), "se": diag.standard_error(xb)[0],
            "ess_nominal": diag.ess(trace), "rhat_nominal": diag.rhat(trace)}


# ------------------------------------------------------------------------------------------- workers
def run_ours(p: dict[str, Any], seed: int, quick: bool, native: bool = False,
             num_chains: int | None = None, minibatch: bool = False) -> dict[str, Any]:
    from slt_tms.estimators import estimate_llc

    rows = p["rows"]
    kw: dict[str, Any] = {"localization": LOCALIZATION, "seed": seed, "progress": False,
                          **({"batch_size": MINIBATCH} if minibatch else p.get("ours_kw", {}))}
    if num_chains is not None:
        kw["num_chains"] = num_chains
    if quick:
        kw.update(num_burnin=50, num_draws=100)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if native:  # the TMS as slt_tms builds it: closed-form loss, one-hot rows through prefix sums
            from slt_tms.theory.critical_points import kgon

            res = estimate_llc(kgon(6, 6), p["X"].double(), **kw)
        else:
            # the named loss where one equals the problem's row loss (as a user would write it), else the
            # row loss itself as a callable
            loss = p.get("ours_loss") or (lambda a, b: rows(a, b).mean())
            res = estimate_llc(p["module"], (p["X"], p["Y"]), loss=loss, **kw)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "llc": res.llc, "se": res.se, "rhat": res.rhat, "ess": res.ess,
            "ess_nominal": res.ess, "converged": bool(res.converged), "flags": list(res.flags),
            "sampler": res.sampler, "draws_per_chain": res.num_draws,
            "num_chains": int(res.llc_per_chain.shape[0]), "num_grads": res.num_grads,
            "cpu_seconds": res.cpu_seconds, "nbeta": res.nbeta,
            "bias_check": None if res.bias_check is None else {
                k: res.bias_check.get(k) for k in ("llc_step", "se_step", "difference", "se_difference",
                                                   "relative_correction", "extrapolation_reliable")},
            "step_size": res.config["step_size_mean"]}


class _RowIds(torch.utils.data.Dataset):
    """Row ``i`` as the token pair ``[i, i]`` (devinterp 2.x feeds ``input_ids`` to the loss function)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([i, i])}


def _devinterp_once(p: dict[str, Any], lr: float, num_draws: int, seed: int) -> dict[str, Any]:
    """One call of devinterp's ``sample`` with its documented settings; the lambda trace and its time."""
    import copy

    from devinterp.slt.sampling import sample

    X, Y, rows = p["X"], p["Y"], p["rows"]
    nbeta = _nbeta(p["n"])

    def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        idx = input_ids[:, 0]
        return rows(model(X[idx]), Y[idx]).unsqueeze(-1)  # (batch, 1): one "token" per row

    tmp = Path(tempfile.mkdtemp(prefix="devinterp-bench-"))
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = sample(copy.deepcopy(p["module"]), _RowIds(p["n"]), {}, lr=lr, n_beta=nbeta,
                          num_chains=4, num_draws=num_draws, batch_size=32, num_burnin_steps=0,
                          localization=LOCALIZATION, init_seed=seed, device="cpu",
                          output_path=tmp / "samples.zarr", loss_fn=loss_fn)
            micro = np.asarray(tree.dataset.sampling_loss_micro.values, dtype=np.float64)
        dt = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    step_loss = micro.mean(axis=(2, 3))  # (chain, step): minibatch loss at the point each step started from
    trace = nbeta * (step_loss[:, step_loss.shape[1] // 5:] - _anchor_loss(p))
    out: dict[str, Any] = {"seconds": dt, "lr": lr, "num_draws": num_draws, "num_chains": 4, "batch_size": 32}
    if not np.all(np.isfinite(trace)):
        return {**out, "finite": False}
    return {**out, "finite": True, "llc": float(trace.mean()), **_ess_rhat(trace, minibatch=True)}


def _accurate(r: dict[str, Any], ref: tuple[float, float] | None) -> bool | None:
    """Within 5% of the reference plus two combined standard errors (None without a reference)."""
    if ref is None or not r.get("finite"):
        return None if ref is None else False
    return bool(abs(r["llc"] - ref[0]) <= 0.05 * abs(ref[0]) + 2 * math.hypot(r["se"], ref[1]))


def _to_target(p: dict[str, Any], lr: float, seed: int, quick: bool, budget: float) -> dict[str, Any]:
    """devinterp has no stopping rule: num_draws doubles from 1 000 until the ESS (same rule as ours)
    reaches 400 or the next run would exceed the budget; only the last run's time is charged."""
    draws = 40 if quick else 1000
    runs = []
    while True:
        r = _devinterp_once(p, lr, draws, seed)
        runs.append({k: v for k, v in r.items()})
        if (r.get("finite") and r["ess"] >= TARGET_ESS) or quick or not r.get("finite") \
                or 2.2 * r["seconds"] > budget:
            break
        draws *= 2
    return {**runs[-1], "reached_target_ess": bool(runs[-1].get("finite") and runs[-1]["ess"] >= TARGET_ESS),
            "runs": runs}


def run_devinterp(p: dict[str, Any], seed: int, quick: bool, budget: float,
                  ref: tuple[float, float] | None) -> dict[str, Any]:
    """devinterp at its README step (lr = 1e-3), and at the largest step of the ladder 1e-3 / sqrt(10)^k
    that is accurate against the reference (this search costs several runs; it is reported, not
    charged: a user without a reference could not do it)."""
    ladder = [1e-3 / math.sqrt(10.0) ** k for k in range(5)]
    sweep = []
    for lr in ladder:
        r = _devinterp_once(p, lr, 40 if quick else 2000, seed)
        r["accurate"] = _accurate(r, ref)
        sweep.append(r)
    readme = _to_target(p, 1e-3, seed, quick, budget)
    readme["accurate"] = _accurate(readme, ref)
    ok = [r["lr"] for r in sweep if r["accurate"]]
    tuned = None
    if ok:
        tuned = _to_target(p, max(ok), seed, quick, budget)
        tuned["accurate"] = _accurate(tuned, ref)
    return {"readme": readme, "tuned": tuned, "lr_sweep": sweep}


def thread_count() -> int | None:
    """OMP_NUM_THREADS, which both libraries must share; None (after saying so) when it is not set."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads < 1:
        print("set OMP_NUM_THREADS (e.g. OMP_NUM_THREADS=1) so both libraries use the same thread count",
              file=sys.stderr)
        return None
    return threads


def write_record(out: Path, record: dict[str, Any]) -> None:
    """Write the benchmark's JSON record atomically (a temporary file renamed into place)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float))
    os.replace(tmp, out)
    print(f"\nwrote {out}")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _reference(problem: str) -> tuple[float, float] | None:
    """NumPyro NUTS reference (value, MCSE) of the problem's estimand, if recorded."""
    if not REFERENCE.exists():
        return None
    for line in REFERENCE.read_text().splitlines():
        r = json.loads(line)
        if r["problem"] == problem and abs(r["nbeta"] - _nbeta(PROBLEMS[problem](0)["n"])) < 1e-6:
            return float(r["est"]), float(r["se"])
    return None


def worker(lib: str, problem: str, seed: int, quick: bool, budget: float,
           reference: tuple[float, float] | None = None) -> dict[str, Any]:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from slt_tms.samplers import diagnostics

    diagnostics._arviz()  # ArviZ (slt_tms imports it lazily): loaded before the clock, for both libraries

    if lib == "devinterp":
        import devinterp.slt.sampling  # noqa: F401
    else:
        import slt_tms.estimators  # noqa: F401
    p = PROBLEMS[problem](seed)
    base = _rss_mb()
    if lib == "devinterp":
        out = run_devinterp(p, seed, quick, budget, reference or _reference(problem))
    else:
        out = run_ours(p, seed, quick, native=lib.startswith("slt_tms_native"),
                       num_chains=NATIVE_MANY_CHAINS if lib.endswith("_many") else None,
                       minibatch=lib == "slt_tms_minibatch")
    out["rss_before_mb"] = base
    out["peak_rss_mb"] = _rss_mb()
    out["anchor_loss"] = _anchor_loss(p)
    return out


def export(path: str, seed: int) -> None:
    """The rows, anchors and targets of tms and rrr for the independent NumPyro reference."""
    arrs: dict[str, np.ndarray] = {"gamma": np.asarray(LOCALIZATION)}
    for key in ("tms", "rrr"):
        p = PROBLEMS[key](seed)
        arrs[key + "_X"] = p["X"].double().numpy()
        arrs[key + "_Y"] = p["Y"].double().numpy()
        w = torch.cat([q.detach().reshape(-1) for q in p["module"].parameters()])
        arrs[key + "_w"] = w.double().numpy()
        arrs["nbeta_" + key] = np.asarray(_nbeta(p["n"]))
    np.savez(path, **arrs)


# ------------------------------------------------------------------------------------------- parent
def _spawn(lib: str, problem: str, seed: int, quick: bool, budget: float,
           reference: tuple[float, float] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", lib, problem, "--seed", str(seed), "--budget", str(budget)]
    if quick:
        cmd.append("--quick")
    if reference is not None:
        cmd += ["--reference", repr(reference[0]), repr(reference[1])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{lib} on {problem} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _metrics(r: dict[str, Any], scale: float) -> dict[str, float]:
    """Seconds per effective sample, and seconds to a standard error of 1% of ``scale`` (the run's time
    times (SE / 0.01 scale)^2: Monte-Carlo error falls as 1/sqrt(time), so this normalises runs that
    stopped at different precisions; it is the time-to-answer a user pays)."""
    if not r or not r.get("finite", True) or not r.get("ess"):
        return {"s_per_ess": math.inf, "s_to_1pct": math.inf}
    return {"s_per_ess": r["seconds"] / r["ess"],
            "s_to_1pct": r["seconds"] * (r["se"] / (0.01 * abs(scale))) ** 2}


def _rows(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("slt_tms", entry["slt_tms"])]
    if "slt_tms_native" in entry:
        rows.append(("slt_tms TMS-native", entry["slt_tms_native"]))
    if "slt_tms_native_many" in entry:
        rows.append((f"slt_tms native {NATIVE_MANY_CHAINS} ch", entry["slt_tms_native_many"]))
    if "slt_tms_many" in entry:
        rows.append((f"slt_tms {NATIVE_MANY_CHAINS} ch", entry["slt_tms_many"]))
    if "slt_tms_minibatch" in entry:
        rows.append((f"slt_tms SGLD batch {MINIBATCH}", entry["slt_tms_minibatch"]))
    d = entry["devinterp"]
    peak = {"peak_rss_mb": d.get("peak_rss_mb", 0.0)}  # one process ran all devinterp runs
    rows.append((f"devinterp lr {d['readme']['lr']:.0e}", {**d["readme"], **peak}))
    if d.get("tuned"):
        rows.append((f"devinterp lr {d['tuned']['lr']:.1e}*", {**d["tuned"], **peak}))
    return rows


def _table(results: dict[str, Any]) -> str:
    head = (f"{'problem':24s} {'run':22s} {'lambda +/- SE':>17s} {'bias':>6s} {'R-hat':>6s} {'ESS':>6s} "
            f"{'nomESS':>7s} {'wall s':>7s} {'s/ESS':>8s} {'ratio':>6s} {'s to 1%':>8s} {'ratio':>6s} "
            f"{'peak MB':>7s}")
    lines = [head, "-" * len(head)]
    for r in results.values():
        ref = r.get("reference")
        scale = ref[0] if ref else r["slt_tms"]["llc"]
        base = _metrics(r["slt_tms"], scale)
        for label, e in _rows(r):
            if not e.get("finite", True):
                lines.append(f"{r['name'][:24]:24s} {label:22s} diverged (non-finite trace)")
                continue
            m = _metrics(e, scale)
            bias = f"{100 * (e['llc'] - ref[0]) / ref[0]:+5.0f}%" if ref else "     ?"
            lines.append(
                f"{r['name'][:24]:24s} {label:22s} {e['llc']:8.3f} +/- {e['se']:5.3f} {bias:>6s} "
                f"{e['rhat']:6.3f} {e['ess']:6.0f} {e.get('ess_nominal', e['ess']):7.0f} {e['seconds']:7.1f} "
                f"{m['s_per_ess']:8.2e} {m['s_per_ess'] / base['s_per_ess']:5.1f}x {m['s_to_1pct']:8.0f} "
                f"{m['s_to_1pct'] / base['s_to_1pct']:5.1f}x {e.get('peak_rss_mb', 0):7.0f}"
            )
        ref_txt = f"{ref[0]:.3f} +/- {ref[1]:.3f} ({r.get('reference_source') or 'NumPyro NUTS'})" if ref \
            else "none recorded"
        lines.append(f"{'':24s} reference: {ref_txt}; {r['meta']}")
    lines.append("ratio = the row's value / slt_tms's (above 1: slower than slt_tms). * = the largest lr of "
                 "1e-3 / sqrt(10)^k accurate against the reference (a search a user without a reference "
                 "cannot do; not charged). ESS by one rule for all (20-draw block means for minibatch "
                 "traces); nomESS = ArviZ ESS of the raw trace.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny runs (smoke test of the script)")
    ap.add_argument("--only", default="tms,rrr,mlp", help="comma-separated subset of tms,rrr,mlp")
    ap.add_argument("--budget", type=float, default=1200.0,
                    help="seconds: devinterp's doubling of num_draws stops before a run would exceed this")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--export", metavar="NPZ", help="write the problems for the NumPyro reference and stop")
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "PROBLEM"), help=argparse.SUPPRESS)
    ap.add_argument("--reference", nargs=2, type=float, metavar=("VALUE", "SE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        lib, prob = args.worker
        ref = tuple(args.reference) if args.reference else None
        print(json.dumps(worker(lib, prob, args.seed, args.quick, args.budget, ref)))
        return 0
    if args.export:
        export(args.export, args.seed)
        return 0
    threads = thread_count()
    if threads is None:
        return 2
    import devinterp

    problems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(problems) - set(PROBLEMS))
    if unknown:
        print(f"unknown problem(s) {unknown}; choose from {sorted(PROBLEMS)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for prob in problems:
        meta = PROBLEMS[prob](args.seed)
        ref = _reference(prob)
        entry: dict[str, Any] = {"name": meta["name"], "meta": meta["meta"], "nbeta": _nbeta(meta["n"]),
                                 "localization": LOCALIZATION, "reference": ref,
                                 "reference_source": "NumPyro NUTS" if ref else None}
        extra = {"tms": ["slt_tms_native", "slt_tms_native_many"], "rrr": ["slt_tms_many"],
                 "mlp": ["slt_tms_minibatch"]}
        libs = ["slt_tms", "devinterp", *extra.get(prob, [])]
        for lib in libs:
            t0 = time.perf_counter()
            entry[lib] = _spawn(lib, prob, args.seed, args.quick, args.budget,
                                None if entry["reference_source"] == "NumPyro NUTS" else entry["reference"])
            print(f"{prob} {lib:15s} {time.perf_counter() - t0:7.1f} s", flush=True)
            ours = entry[lib]
            if lib == "slt_tms" and entry["reference"] is None and ours.get("converged") \
                    and not ours["flags"]:
                # no independent reference: the exact (Metropolis-adjusted, full-batch) row of this run
                entry["reference"] = (ours["llc"], ours["se"])
                entry["reference_source"] = "slt_tms full-batch HMC, this run"
        results[prob] = entry
    print()
    print(_table(results))
    record = {
        "command": (f"OMP_NUM_THREADS={threads} benchmarks/.venv-bench/bin/python "
                    "benchmarks/bench_llc_vs_devinterp.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "torch": torch.__version__, "devinterp": getattr(devinterp, "__version__", "2.0.1"),
        "threads": threads, "machine": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()), "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                               time.gmtime()),
        "results": results, "table": _table(results),
    }
    write_record(Path(args.out), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
