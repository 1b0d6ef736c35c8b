r"""slt_tms vs devinterp 2.0.1: SGLD local-learning-coefficient estimation, timed side by side in one process.

Run with the benchmark environment (``benchmarks/setup_bench_env.sh`` builds it)::

    OMP_NUM_THREADS=1 benchmarks/.venv-bench/bin/python benchmarks/bench_llc_vs_devinterp.py

Problems (same potential, same hyperparameters for both libraries):

(i)  TMS, c = 6, r = 2 (18 parameters) at the 6-gon critical point :func:`slt_tms.theory.critical_points.kgon`
     ``(6, 6)``, empirical loss :math:`L_n(w) = \frac1n\sum_k \lVert x_k - f(x_k; w)\rVert^2` on ``n``
     one-hot samples, 8 chains, minibatches.
(ii) an MLP 100-256-256-10 (tanh, 94 218 parameters) at its teacher weights on synthetic regression data
     ``y = teacher(x) + 0.1 * noise``, MSE loss (mean over rows and outputs), 8 chains, minibatches.

Both run plain SGLD (Lau et al.): :math:`w \leftarrow w - \frac{\epsilon}{2}[n\beta\nabla L_B(w) +
\gamma(w - w^*)] + \sqrt{\epsilon}\,\xi` with the same :math:`\epsilon`, :math:`n\beta`, :math:`\gamma`,
chains, burn-in, draws and batch size. devinterp is driven through its public
``devinterp.slt.sampling.sample`` (chains one after another, each a ``torch.optim`` loop over a
``DataLoader``, traces written to zarr); its 2.x API is built around language-model ``input_ids``, so row
``i`` of the dataset is served as the token pair ``[i, i]`` and the loss function looks the row up (one
"token position" = one row's loss). A second devinterp measurement, ``devinterp-loop``, drives its SGLD
optimiser (``SGMCMC.sgld``) in a bare per-chain loop over a ``DataLoader(TensorDataset)`` without zarr or
per-step callbacks: the lower bound of devinterp's cost. slt_tms is timed through
:func:`slt_tms.estimators.estimate_llc` (whole call: anchor loss, sampling, diagnostics, ArviZ trace).

Timing: wall clock of each whole call divided by ``chains * (burn-in + draws)``, repeated ``--repeats``
times with the libraries alternating, median reported (the machine is shared; the spread is printed).
(iii) compares our SGLD sampling loop (:func:`slt_tms.estimators.sgld.sample`, exactly as
``estimate_llc`` calls it) with a bare ``torch.func.vmap(grad_and_value(loss))`` over the same per-chain
minibatches (the gradient alone, nothing else).

Agreement: for devinterp the per-step minibatch losses after burn-in are turned into the trace
:math:`n\beta(L_B(w_t) - L_n(w^*))` with the same full-data :math:`L_n(w^*)` and the same Monte-Carlo
standard error (:func:`slt_tms.estimators.diagnostics.mcse_mean`) as ours; the two estimates agree when
:math:`|\hat\lambda_1 - \hat\lambda_2| \le 3\sqrt{SE_1^2 + SE_2^2}`. devinterp's own ``compute_llc``
(which averages over burn-in too and uses a 32-batch estimate of :math:`L(w^*)`) is printed for reference.

Writes ``benchmarks/results/llc_vs_devinterp.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
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

from slt_tms._rng import spawn_seeds
from slt_tms.estimators import diagnostics as diag
from slt_tms.estimators import estimate_llc

__all__: list[str] = []

RESULTS = Path(__file__).resolve().parent / "results" / "llc_vs_devinterp.json"


# ------------------------------------------------------------------------------------------- problems
class _TMSModule(nn.Module):
    """The TMS ``relu(W^T W x + b)`` as a plain module (devinterp needs an nn.Module)."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x @ self.W.T) @ self.W + self.b)


def _mlp(generator: torch.Generator) -> nn.Module:
    net = nn.Sequential(nn.Linear(100, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features), generator=generator)
            nn.init.normal_(m.bias, std=0.1, generator=generator)
    return net


def tms_problem(n: int, seed: int) -> dict[str, Any]:
    from slt_tms.theory.critical_points import kgon
    from slt_tms.tms import OneHotUniform, empirical_loss, fixed_dataset

    cp = kgon(6, 6)
    X = fixed_dataset(OneHotUniform(6), n, seed=seed)
    W = torch.as_tensor(np.asarray(cp.W), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(cp.b), dtype=torch.float32)
    module = _TMSModule(W, b)

    def row_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((model(x) - y) ** 2).sum(-1)  # per row; the mean over rows is empirical_loss

    def single(w: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return empirical_loss(w, xb, 6, 2)

    return {
        "name": "TMS c=6 6-gon (18 params)", "ours_source": cp, "ours_data": X, "ours_loss": None,
        "module": module, "X": X, "Y": X, "row_loss": row_loss, "single": single,
        "w_star": cp.flat(dtype=torch.float32), "d": cp.d,
        "meta": {"critical_point": cp.name, "c": 6, "r": 2, "n": n, "population_loss": cp.loss,
                 "lambda_theory": cp.lambda_theory},
    }


def mlp_problem(n: int, seed: int) -> dict[str, Any]:
    from torch.func import functional_call

    g = torch.Generator().manual_seed(seed)
    teacher = _mlp(g)
    X = torch.randn(n, 100, generator=g)
    with torch.no_grad():
        Y = teacher(X) + 0.1 * torch.randn(n, 10, generator=g)
    names = [k for k, _ in teacher.named_parameters()]
    shapes = [p.shape for _, p in teacher.named_parameters()]
    sizes = [p.numel() for _, p in teacher.named_parameters()]
    w_star = torch.cat([p.detach().reshape(-1) for p in teacher.parameters()])

    def row_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((model(x) - y) ** 2).mean(-1)  # per row; mean over rows = F.mse_loss

    def single(w: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        params = {k: t.view(s) for k, t, s in zip(names, torch.split(w, sizes), shapes, strict=True)}
        return torch.nn.functional.mse_loss(functional_call(teacher, params, (batch[0],)), batch[1])

    return {
        "name": f"MLP 100-256-256-10 ({w_star.numel()} params)", "ours_source": teacher,
        "ours_data": (X, Y), "ours_loss": "mse", "module": teacher, "X": X, "Y": Y, "row_loss": row_loss,
        "single": single, "w_star": w_star, "d": w_star.numel(),
        "meta": {"n": n, "architecture": "100-256-256-10 tanh", "noise_std": 0.1},
    }


# ------------------------------------------------------------------------------------------- runners
def run_ours(p: dict[str, Any], hp: dict[str, Any], seed: int) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        data=p["ours_data"], n=hp["n"], nbeta=hp["nbeta"], localization=hp["localization"],
        step_size=hp["step_size"], num_chains=hp["num_chains"], num_draws=hp["num_draws"],
        num_burnin=hp["num_burnin"], batch_size=hp["batch_size"], seed=seed, progress=False,
        dtype=torch.float32,
    )
    if p["ours_loss"] is not None:
        kw["loss"] = p["ours_loss"]
        kw.pop("dtype")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = estimate_llc(p["ours_source"], **kw)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "llc": res.llc, "se": res.se, "rhat": res.rhat, "ess": res.ess,
            "anchor_loss": res.config["anchor_loss"], "diverged": int(np.sum(res.diverged)),
            "mala_acceptance": res.mala_acceptance}


class _RowIds(torch.utils.data.Dataset):
    """Row ``i`` as the token pair ``[i, i]`` (devinterp 2.x feeds ``input_ids`` to the loss function)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([i, i])}


def _full_loss(p: dict[str, Any]) -> float:
    with torch.no_grad():
        return float(p["row_loss"](p["module"], p["X"], p["Y"]).double().mean())


def run_devinterp(p: dict[str, Any], hp: dict[str, Any], seed: int) -> dict[str, Any]:
    from devinterp.slt.llc import compute_llc
    from devinterp.slt.sampling import sample

    X, Y, row_loss = p["X"], p["Y"], p["row_loss"]

    def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        idx = input_ids[:, 0]
        return row_loss(model, X[idx], Y[idx]).unsqueeze(-1)  # (batch, 1): one "token" per row

    tmp = Path(tempfile.mkdtemp(prefix="devinterp-bench-"))
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = sample(
                p["module"], _RowIds(X.shape[0]), {}, lr=hp["step_size"], n_beta=hp["nbeta"],
                num_chains=hp["num_chains"], num_draws=hp["num_draws"], num_burnin_steps=hp["num_burnin"],
                batch_size=hp["batch_size"], localization=hp["localization"], init_seed=seed,
                device="cpu", output_path=tmp / "samples.zarr", loss_fn=loss_fn,
            )
            micro = np.asarray(tree.dataset.sampling_loss_micro.values, dtype=np.float64)
            own = compute_llc(tree)
            own_llc = float(own["llc_mean"])
        dt = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    step_loss = micro.mean(axis=(2, 3))  # (chain, step): minibatch loss at the point each step started from
    anchor = _full_loss(p)
    trace = hp["nbeta"] * (step_loss[:, hp["num_burnin"]:] - anchor)
    return {"seconds": dt, "llc": float(trace.mean()), "se": diag.mcse_mean(trace), "rhat": diag.rhat(trace),
            "ess": diag.ess(trace), "anchor_loss": anchor, "devinterp_compute_llc": own_llc,
            "steps_recorded": int(step_loss.shape[1])}


def run_devinterp_loop(p: dict[str, Any], hp: dict[str, Any], seed: int) -> dict[str, Any]:
    """devinterp's SGLD optimiser in a bare per-chain loop (no zarr, no callbacks): its lower bound."""
    import copy

    from devinterp.optim import SGMCMC
    from torch.utils.data import DataLoader, TensorDataset

    X, Y, row_loss = p["X"], p["Y"], p["row_loss"]
    total = hp["num_burnin"] + hp["num_draws"]
    losses = np.empty((hp["num_chains"], total))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for chain, s in enumerate(spawn_seeds(seed, hp["num_chains"])):
            g = torch.Generator().manual_seed(s)
            model = copy.deepcopy(p["module"])
            opt = SGMCMC.sgld(model.parameters(), lr=hp["step_size"], nbeta=hp["nbeta"],
                              localization=hp["localization"])
            loader = DataLoader(TensorDataset(X, Y), batch_size=hp["batch_size"], shuffle=True,
                                drop_last=True, generator=g)
            it = iter(loader)
            for t in range(total):
                try:
                    xb, yb = next(it)
                except StopIteration:
                    it = iter(loader)
                    xb, yb = next(it)
                opt.zero_grad(set_to_none=True)
                loss = row_loss(model, xb, yb).mean()
                loss.backward()
                opt.step(noise_generator=g)
                losses[chain, t] = loss.item()
    dt = time.perf_counter() - t0
    anchor = _full_loss(p)
    trace = hp["nbeta"] * (losses[:, hp["num_burnin"]:] - anchor)
    return {"seconds": dt, "llc": float(trace.mean()), "se": diag.mcse_mean(trace), "rhat": diag.rhat(trace),
            "ess": diag.ess(trace), "anchor_loss": anchor}


def run_kernel_vs_vmap(p: dict[str, Any], hp: dict[str, Any], seed: int, steps: int) -> dict[str, float]:
    """(iii) our SGLD loop (as estimate_llc runs it) vs a bare vmap(grad_and_value) on the same batches."""
    from torch.func import grad_and_value, vmap

    from slt_tms.estimators import _potentials, llc
    from slt_tms.estimators.sgld import SGLDConfig, sample

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = p["ours_source"]
        data = p["ours_data"]
        pot, _ = llc._resolve_source(src, None, data, p["ours_loss"] or "mse", hp["n"], hp["batch_size"],
                                     torch.float32 if p["ours_loss"] is None else None, None)
    assert isinstance(pot, _potentials.BuiltPotential) and pot.kind == "minibatch"
    cfg = SGLDConfig(step_size=hp["step_size"], nbeta=hp["nbeta"], localization=hp["localization"])
    seeds = spawn_seeds(seed, hp["num_chains"])
    t0 = time.perf_counter()
    # exactly estimate_llc's call (its default mala_every for minibatch potentials is 10)
    sample(pot.grad_fn, cfg, pot.w_star, pot.w_star, steps, seeds, make_batch=pot.make_batch,
           num_data=pot.num_data, batch_size=pot.batch_size, loss_fn=pot.loss_fn, mala_every=10,
           adapt_steps=hp["num_burnin"], progress=False)
    ours = time.perf_counter() - t0

    tensors = data if isinstance(data, tuple) else (data,)
    tensors = tuple(t.float() for t in tensors)
    single = p["single"]
    gv = vmap(grad_and_value(single), in_dims=(0, 0))
    g = torch.Generator().manual_seed(seed)
    w = pot.w_star.unsqueeze(0).repeat(hp["num_chains"], 1)
    n = tensors[0].shape[0]
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, n, (hp["num_chains"], hp["batch_size"]), generator=g)
        batch = tensors[0][idx] if len(tensors) == 1 else tuple(t[idx] for t in tensors)
        gv(w, batch)
    bare = time.perf_counter() - t0

    # the floor of ANY SGLD implementation: the same vmap(grad) plus one N(0, I) draw per chain and
    # parameter and the plain update (no diagnostics, no per-chain streams)
    w_star = pot.w_star
    a, b_ = -0.5 * hp["step_size"], math.sqrt(hp["step_size"])
    nb, gam = hp["nbeta"], hp["localization"]
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, n, (hp["num_chains"], hp["batch_size"]), generator=g)
        batch = tensors[0][idx] if len(tensors) == 1 else tuple(t[idx] for t in tensors)
        grad, _ = gv(w, batch)
        grad_u = grad.mul_(nb).add_(w - w_star, alpha=gam)
        w = torch.add(w, grad_u, alpha=a).add_(torch.randn(w.shape, generator=g), alpha=b_)
    floor = time.perf_counter() - t0
    return {"ours_seconds": ours, "bare_seconds": bare, "sgld_floor_seconds": floor, "steps": steps}


# ------------------------------------------------------------------------------------------- main
def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def bench(p: dict[str, Any], hp: dict[str, Any], repeats: int, seed: int, kernel_steps: int,
          loop: bool) -> dict[str, Any]:
    chain_steps = hp["num_chains"] * (hp["num_burnin"] + hp["num_draws"])
    runs: dict[str, list[dict[str, Any]]] = {"slt_tms": [], "devinterp": [], "devinterp-loop": []}
    kern: list[dict[str, float]] = []
    # untimed warm-up of every code path (lazy imports, first-call allocations)
    warm = {**hp, "num_burnin": 5, "num_draws": 10}
    run_ours(p, warm, seed)
    run_devinterp(p, warm, seed)
    if loop:
        run_devinterp_loop(p, warm, seed)
    run_kernel_vs_vmap(p, hp, seed, 10)
    for r in range(repeats):
        order = [("slt_tms", run_ours), ("devinterp", run_devinterp)]
        if loop:
            order.append(("devinterp-loop", run_devinterp_loop))
        if r % 2:
            order.reverse()
        for name, fn in order:
            runs[name].append(fn(p, hp, seed))
            print(f"  repeat {r + 1}/{repeats} {name:15s} {runs[name][-1]['seconds']:8.2f} s", flush=True)
        kern.append(run_kernel_vs_vmap(p, hp, seed, kernel_steps))
    out: dict[str, Any] = {"problem": p["name"], "meta": p["meta"], "hyperparameters": hp,
                           "chain_steps_per_run": chain_steps, "repeats": repeats, "libraries": {}}
    for name, rs in runs.items():
        if not rs:
            continue
        secs = [x["seconds"] for x in rs]
        per = [s / chain_steps for s in secs]
        out["libraries"][name] = {
            "seconds_per_chain_step_median": _median(per),
            "seconds_per_chain_step_min": min(per),
            "seconds_per_chain_step_all": per,
            "estimate": {k: v for k, v in rs[0].items() if k != "seconds"},
        }
    ours = out["libraries"]["slt_tms"]["seconds_per_chain_step_median"]
    for name in ("devinterp", "devinterp-loop"):
        if name in out["libraries"]:
            other = out["libraries"][name]
            other["speedup_of_slt_tms"] = other["seconds_per_chain_step_median"] / ours
            ours_min = out["libraries"]["slt_tms"]["seconds_per_chain_step_min"]
            other["speedup_of_slt_tms_min_times"] = other["seconds_per_chain_step_min"] / ours_min
            a, b = out["libraries"]["slt_tms"]["estimate"], other["estimate"]
            z = (a["llc"] - b["llc"]) / math.sqrt(a["se"] ** 2 + b["se"] ** 2)
            other["agreement_z"] = z
            other["agree_within_3se"] = bool(abs(z) <= 3.0)
    ratios = [k["ours_seconds"] / k["bare_seconds"] for k in kern]
    floor_ratios = [k["ours_seconds"] / k["sgld_floor_seconds"] for k in kern]
    out["kernel_vs_bare_vmap_grad"] = {
        "ratio_median": _median(ratios), "ratios": ratios, "steps": kernel_steps,
        "ratio_to_sgld_floor_median": _median(floor_ratios), "ratios_to_sgld_floor": floor_ratios,
        "sgld_floor_seconds_per_step_median": _median([k["sgld_floor_seconds"] / kernel_steps for k in kern]),
        "ours_seconds_per_step_median": _median([k["ours_seconds"] / kernel_steps for k in kern]),
        "bare_seconds_per_step_median": _median([k["bare_seconds"] / kernel_steps for k in kern]),
    }
    return out


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'problem':32s} {'library':15s} {'s/chain-step':>13s} {'speedup':>8s} {'(min)':>7s} "
        f"{'llc +/- SE':>20s} {'z':>6s}",
        "-" * 100,
    ]
    for r in results:
        for name, lib in r["libraries"].items():
            e = lib["estimate"]
            sp = lib.get("speedup_of_slt_tms")
            spm = lib.get("speedup_of_slt_tms_min_times")
            z = lib.get("agreement_z")
            lines.append(
                f"{r['problem'][:32]:32s} {name:15s} {lib['seconds_per_chain_step_median']:13.3e} "
                f"{'' if sp is None else f'{sp:7.1f}x':>8s} {'' if spm is None else f'{spm:6.1f}x':>7s} "
                f"{e['llc']:10.3f} +/- {e['se']:6.3f} "
                f"{'' if z is None else f'{z:+6.2f}':>6s}"
            )
        k = r["kernel_vs_bare_vmap_grad"]
        lines.append(
            f"{'':32s} (iii) our SGLD step / bare vmap(grad): {k['ratio_median']:.2f}x "
            f"({k['ours_seconds_per_step_median']:.3e} s vs {k['bare_seconds_per_step_median']:.3e} s "
            f"per step, {r['hyperparameters']['num_chains']} chains)"
        )
        lines.append(
            f"{'':32s}       our SGLD step / SGLD floor (vmap(grad) + noise + plain update): "
            f"{k['ratio_to_sgld_floor_median']:.2f}x "
            f"({k['sgld_floor_seconds_per_step_median']:.3e} s per step)"
        )
        if "devinterp" in r["libraries"]:
            lines.append(f"{'':32s} devinterp compute_llc (burn-in averaged in, 32-batch L(w*)): "
                         f"{r['libraries']['devinterp']['estimate']['devinterp_compute_llc']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians are reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test of the script)")
    ap.add_argument("--no-loop", action="store_true", help="skip the bare devinterp optimiser loop")
    ap.add_argument("--only", choices=("tms", "mlp"), default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads < 1:
        print("set OMP_NUM_THREADS (e.g. OMP_NUM_THREADS=1) so both libraries use the same thread count",
              file=sys.stderr)
        return 2
    torch.set_num_threads(threads)
    import devinterp

    q = args.quick
    # (i) TMS: gamma = 100 (Lau et al.'s value) keeps the relaxation time 2/(eps gamma) = 200 steps well
    # inside the burn-in; eps * nbeta * (largest curvature ~ 2) ~ 0.03, far from the stability limit.
    hp_tms = dict(n=1000, nbeta=1000 / math.log(1000), localization=100.0, step_size=1e-4, num_chains=8,
                  num_burnin=500 if not q else 20, num_draws=2000 if not q else 40, batch_size=100)
    # (ii) MLP: eps = 1e-5 at nbeta = n / log n (n = 2000), same gamma.
    hp_mlp = dict(n=2000, nbeta=2000 / math.log(2000), localization=100.0, step_size=1e-5, num_chains=8,
                  num_burnin=100 if not q else 5, num_draws=300 if not q else 10, batch_size=64)
    results = []
    if args.only in (None, "tms"):
        print(f"(i) TMS c=6: {hp_tms}", flush=True)
        results.append(bench(tms_problem(hp_tms["n"], args.seed), hp_tms, args.repeats, args.seed,
                             2000 if not q else 50, not args.no_loop))
    if args.only in (None, "mlp"):
        print(f"(ii) MLP: {hp_mlp}", flush=True)
        results.append(bench(mlp_problem(hp_mlp["n"], args.seed), hp_mlp, args.repeats, args.seed,
                             200 if not q else 10, not args.no_loop))
    print()
    print(_table(results))
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (math.nan,) * 3
    record = {
        "command": (f"OMP_NUM_THREADS={threads} benchmarks/.venv-bench/bin/python "
                    "benchmarks/bench_llc_vs_devinterp.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "torch": torch.__version__, "devinterp": getattr(devinterp, "__version__", "2.0.1"),
        "threads": threads, "machine": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "load_average_at_end": list(load),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
