r"""The LLC over training, 20 checkpoints: slt_tms's ``estimate_llc_series`` vs devinterp 2.0.1's ``llc()``.

Run with the benchmark environment (``benchmarks/setup_bench_env.sh`` builds it)::

    OMP_NUM_THREADS=1 benchmarks/.venv-bench/bin/python benchmarks/bench_series_vs_devinterp.py
    OMP_NUM_THREADS=1 benchmarks/.venv-bench/bin/python benchmarks/bench_series_vs_devinterp.py --quick

The job: the local learning coefficient at every one of 20 checkpoints of one training run, for two
models trained here from a fixed seed (nothing is downloaded):

* ``mlp``: the MLP of the tutorial "The LLC over training" (2 -> 8 -> 1, tanh, 33 parameters) trained with
  Adam on n = 1000 noisy rows of a 2-4-1 teacher for 3000 steps; 20 checkpoints spaced geometrically in the
  step (100 ... 3000). MSE loss.
* ``lm``: a tiny GPT-2 built from a config (1 layer, 16-dimensional embeddings, 2 heads, a 32-token
  vocabulary, 8-token sequences; 3952 parameters) trained with Adam on n = 32 sequences whose next token is
  the current one plus 1 or 2 (mod 32), for 300 steps; 20 checkpoints spaced geometrically (5 ... 300).
  Per-token next-token cross-entropy (``slt_tms.potentials.causal_lm_loss``; devinterp's default loss).
  Smaller than the GPT-2 of the tutorial (2 layers, 64 sequences) so that the whole benchmark fits in 20
  minutes on a shared machine.

Both libraries estimate the same quantity at every checkpoint, the localized tempered mean of
:math:`n\beta\,(L_n(w) - L_n(w^*))` at :math:`n\beta = n/\log n` and localization :math:`\gamma = 100`
(the tutorial's :math:`\gamma`: training checkpoints are not minima, and a strong pull keeps the chains at
the checkpoint being measured).

* **slt_tms**: ``estimate_llc_series(checkpoints, make_model, data, loss=... | evaluate=...,
  localization=100, seed=0)``, everything else at its default: full-batch HMC with adapted step size and
  metric, 4 chains per checkpoint, the last checkpoint first with the full warmup and its calibration
  reused (re-checked) by the others in batches of 8 with a fifth of the warmup, each checkpoint sampled
  until split R-hat <= 1.01 and ESS >= 400 or until the draw budget ``--max-draws`` (default here 2 000
  draws per chain, to bound the benchmark's time; the library's default is 20 000; a checkpoint stopped by
  the budget is flagged "not converged" and counted as not trustworthy). The whole call is timed (loading the
  checkpoints included).
* **devinterp 2.0.1**: its ``devinterp.slt.llc.llc(model, dataset, {}, lr=1e-3, n_beta=n/log n,
  localization=100, num_chains=4, num_draws=200, batch_size=32, num_burnin_steps=0)`` in a loop over the
  checkpoints (model built and loaded inside the loop, timed). These are the settings of its README
  (``lr=0.001``, ``num_chains=4``, ``num_draws=200``, its default ``batch_size=32`` and
  ``num_burnin_steps=0``), with the temperature and localization of the job. ``llc()`` is devinterp
  2.x's replacement of 1.x's ``estimate_learning_coeff_with_summary`` (its README, "Migrating from v1"),
  which 2.0.1 no longer has. The MLP's rows are served to it as token pairs ``[i, i]`` with a loss function
  that looks the row up (devinterp 2.x takes ``input_ids`` datasets only; the loss is the same).

Measured per library and problem, in a fresh subprocess each (one thread): wall seconds of the whole job,
peak resident memory (``ru_maxrss``, as ``bench_llc_vs_devinterp.py``), and per checkpoint the estimate and
the ArviZ bulk ESS of the per-draw loss trace (``(chain, draw)``; for slt_tms the post-warmup draws of
the non-diverged chains). devinterp's trace is the minibatch loss of each step, whose step-to-step
minibatch noise counts as independent information in that ESS; the ESS of its 20-draw block means (the
rule slt_tms applies to its own minibatch runs) is reported beside it.

Summary ratios: ``wall_devinterp / wall_slt_tms`` (with the number of checkpoints at which slt_tms's ESS
is at least devinterp's, so the ratio is "at equal or better ESS" where that count is 20 of 20), and the
same per effective sample, ``(wall / total ESS)_devinterp / (wall / total ESS)_slt_tms``.

Writes ``benchmarks/results/series_vs_devinterp.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in either library
os.environ.setdefault("SLT_TMS_NO_PROGRESS", "1")

import numpy as np
import torch

# shared with the single-model benchmark beside this file (run as a script, its folder is on sys.path)
from bench_llc_vs_devinterp import LOCALIZATION, _RowIds, _rss_mb, thread_count, write_record
from torch import nn

__all__: list[str] = []

RESULTS = Path(__file__).resolve().parent / "results" / "series_vs_devinterp.json"
NUM_CHECKPOINTS = 20
#: devinterp's README settings (its ``llc()`` / ``sample()`` example; batch size and burn-in its defaults).
DEVINTERP = {"lr": 1e-3, "num_chains": 4, "num_draws": 200, "batch_size": 32, "num_burnin_steps": 0}
#: The GPT-2 of the ``lm`` problem.
VOCAB, SEQ, LM_ROWS = 32, 8, 32
#: slt_tms's draw budget per chain in this benchmark (LLCConfig.max_draws; the library's default is 20 000).
MAX_DRAWS = 2000
LM_CONFIG = {"n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": VOCAB, "n_positions": SEQ,
             "bos_token_id": 0, "eos_token_id": 0}


# ------------------------------------------------------------------------------------------- problems
def make_mlp() -> nn.Module:
    """The tutorial's student: 2 -> 8 -> 1, tanh (33 parameters)."""
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def make_lm() -> nn.Module:
    """The tiny GPT-2 of the ``lm`` problem (module docstring), from a config: nothing is downloaded."""
    import transformers

    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**LM_CONFIG))


def _mlp_data(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = 1000
    X = torch.randn(n, 2, generator=g)
    teacher = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(1.5 * torch.randn(p.shape, generator=g))
        Y = teacher(X) + 0.1 * torch.randn(n, 1, generator=g)
    return {"x": X, "y": Y}


def _lm_data(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (LM_ROWS, 1), generator=g)
    steps = torch.randint(1, 3, (LM_ROWS, SEQ - 1), generator=g)
    return {"input_ids": torch.cat([start, start + steps.cumsum(1)], 1) % VOCAB}


def _lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def train(problem: str, seed: int, out: Path, quick: bool) -> dict[str, Any]:
    """Train the problem's model and save its checkpoints (safetensors) and data in ``out``."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    k = 4 if quick else NUM_CHECKPOINTS
    if problem == "mlp":
        data, model, total, lr, first = _mlp_data(seed), make_mlp(), 3000, 1e-2, 100
        step_loss = lambda: nn.functional.mse_loss(model(data["x"]), data["y"])  # noqa: E731
    else:
        data, model, total, lr, first = _lm_data(seed), make_lm(), 300, 1e-2, 5
        step_loss = lambda: _lm_loss(model, data["input_ids"])  # noqa: E731
    if quick:
        total = max(total // 10, 4 * first)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - 0.99 * t / total)
    save_at = sorted(set(np.geomspace(first, total, k).round().astype(int).tolist()))
    out.mkdir(parents=True, exist_ok=True)
    for step in range(1, total + 1):
        opt.zero_grad()
        loss = step_loss()
        loss.backward()
        opt.step()
        sched.step()
        if step in save_at:
            sd = {n: t.detach().clone().contiguous() for n, t in model.state_dict().items()}
            if problem == "lm":  # GPT-2 ties lm_head to the embedding: safetensors stores one of them
                sd.pop("lm_head.weight", None)
            save_file(sd, str(out / f"step_{step:05d}.safetensors"))
    save_file({k2: v.contiguous() for k2, v in data.items()}, str(out / "data.safetensors"))
    return {"steps": save_at, "final_train_loss": float(loss.detach()), "train_steps": total}


def _load(problem: str, ckpt_dir: Path) -> tuple[list[dict[str, torch.Tensor]], list[int], dict]:
    from safetensors.torch import load_file

    paths = sorted(ckpt_dir.glob("step_*.safetensors"))
    states = [load_file(str(p)) for p in paths]
    steps = [int(p.stem.split("_")[1]) for p in paths]
    return states, steps, load_file(str(ckpt_dir / "data.safetensors"))


def _full_state(problem: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as the model has it (GPT-2's output layer is tied to the token embedding: saved
    once)."""
    if problem == "lm":
        return {**state, "lm_head.weight": state["transformer.wte.weight"]}
    return state


def _model_at(problem: str, state: dict[str, torch.Tensor]) -> nn.Module:
    model = make_mlp() if problem == "mlp" else make_lm()
    model.load_state_dict(_full_state(problem, state), strict=True)
    return model


# ------------------------------------------------------------------------------------------- workers
def _ess(trace: np.ndarray) -> dict[str, float]:
    """ArviZ bulk ESS (and split R-hat) of a ``(chain, draw)`` trace, raw and on 20-draw block means."""
    from slt_tms.estimators.sgld_bias import block_means as _block_means
    from slt_tms.samplers import diagnostics as diag

    return {"ess": diag.ess(trace), "rhat": diag.rhat(trace), "ess_blocks": diag.ess(_block_means(trace))}


def run_ours(problem: str, ckpt_dir: Path, seed: int, quick: bool, max_draws: int | None) -> dict[str, Any]:
    from slt_tms.estimators.series import estimate_llc_series
    from slt_tms.potentials import causal_lm_loss

    states, steps, data = _load(problem, ckpt_dir)
    kw: dict[str, Any] = {"localization": LOCALIZATION, "seed": seed, "progress": False}
    if max_draws is not None:
        kw["max_draws"] = max_draws
    if quick:
        kw.update(num_burnin=30, num_draws=60)
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flags are kept in the rows
        ckpts = [_full_state(problem, s) for s in states]
        if problem == "mlp":
            series = estimate_llc_series(ckpts, make_mlp, (data["x"], data["y"]), steps=steps, loss="mse",
                                         **kw)
        else:
            series = estimate_llc_series(ckpts, make_lm, {"input_ids": data["input_ids"]}, steps=steps,
                                         evaluate=causal_lm_loss, **kw)
    wall = time.perf_counter() - t0
    rows = []
    for row, r in zip(series.rows(), series.results, strict=True):
        loss = np.asarray(r.trace.posterior["loss"].values)[~np.asarray(r.diverged)]
        rows.append({"step": row["step"], "llc": r.llc, "se": r.se, "ok": r.ok, "flags": list(r.flags),
                     "draws_per_chain": r.num_draws, "num_grads": r.num_grads, **_ess(loss)})
    return {"seconds": wall, "rss_before_mb": base_rss, "rows": rows, "nbeta": series.results[0].nbeta,
            "settings": {k: v for k, v in kw.items() if k != "progress"},
            "sampler": series.results[0].sampler, "num_chains": int(series.results[0].llc_per_chain.shape[0])}


class _Sequences(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i]}


def run_devinterp(problem: str, ckpt_dir: Path, seed: int, quick: bool, draws: int) -> dict[str, Any]:
    from devinterp.slt.llc import llc

    states, steps, data = _load(problem, ckpt_dir)
    settings = {**DEVINTERP, "num_draws": 20 if quick else draws}
    if problem == "mlp":
        X, Y = data["x"], data["y"]
        n, dataset = X.shape[0], _RowIds(X.shape[0])

        def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
            idx = input_ids[:, 0]
            return (model(X[idx]) - Y[idx]).square().mean(-1, keepdim=True)  # (batch, 1): one "token" per row
    else:
        n, dataset, loss_fn = LM_ROWS, _Sequences(data["input_ids"]), None  # its default: next-token CE
    nbeta = n / math.log(n)
    base_rss = _rss_mb()
    tmp = Path(tempfile.mkdtemp(prefix="devinterp-series-"))
    rows = []
    try:
        t0 = time.perf_counter()
        for i, (state, step) in enumerate(zip(states, steps, strict=True)):
            model = _model_at(problem, state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = llc(model, dataset, {}, n_beta=nbeta, localization=LOCALIZATION, init_seed=seed + i,
                          device="cpu", output_path=tmp / f"{i}.zarr", loss_fn=loss_fn, **settings)
            trace = np.asarray(out.loss_trace.values, dtype=np.float64)  # (chain, step): minibatch losses
            rows.append({"step": step, "llc": float(out.llc_mean), "std_over_chains": float(out.llc_std),
                         "finite": bool(np.all(np.isfinite(trace))),
                         **(_ess(trace) if np.all(np.isfinite(trace)) else {})})
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": wall, "rss_before_mb": base_rss, "rows": rows, "nbeta": nbeta, "settings": settings}


def worker(lib: str, problem: str, ckpt_dir: Path, seed: int, quick: bool, max_draws: int | None,
           draws: int) -> dict[str, Any]:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import slt_tms.samplers.diagnostics  # noqa: F401  (ArviZ: imported by both measurements)

    if lib == "devinterp":
        out = run_devinterp(problem, ckpt_dir, seed, quick, draws)
    else:
        out = run_ours(problem, ckpt_dir, seed, quick, max_draws)
    out["peak_rss_mb"] = _rss_mb()
    return out


# ------------------------------------------------------------------------------------------- parent
def _spawn(lib: str, problem: str, ckpt_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", lib, problem, str(ckpt_dir), "--seed", str(args.seed),
           "--devinterp-draws", str(args.devinterp_draws)]
    if args.max_draws is not None:
        cmd += ["--max-draws", str(args.max_draws)]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{lib} on {problem} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(entry: dict[str, Any]) -> dict[str, Any]:
    """Totals and ratios of one problem (module docstring)."""
    ours, dev = entry["slt_tms"], entry["devinterp"]
    ess_o = [r["ess"] for r in ours["rows"]]
    ess_d = [r.get("ess", 0.0) for r in dev["rows"]]
    ess_db = [r.get("ess_blocks", 0.0) for r in dev["rows"]]
    per_ess_o = ours["seconds"] / sum(ess_o)
    return {
        "wall_ratio": dev["seconds"] / ours["seconds"],
        "ours_ess_at_least_devinterp": sum(o >= d for o, d in zip(ess_o, ess_d, strict=True)),
        "ours_ess_at_least_devinterp_blocks": sum(o >= d for o, d in zip(ess_o, ess_db, strict=True)),
        "per_ess_ratio": (dev["seconds"] / sum(ess_d)) / per_ess_o if sum(ess_d) > 0 else math.nan,
        "per_ess_ratio_blocks": (dev["seconds"] / sum(ess_db)) / per_ess_o if sum(ess_db) > 0 else math.nan,
        "ours_ok": sum(r["ok"] for r in ours["rows"]),
        "checkpoints": len(ours["rows"]),
    }


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else math.nan


def table(results: dict[str, Any]) -> str:
    """The Markdown summary table (one row per library and problem) and the per-checkpoint estimates."""
    lines = ["| problem | library | wall s | peak MB | ESS per checkpoint: median (min) | "
             "ESS of 20-draw block means | trustworthy | wall ratio devinterp / slt_tms | per-ESS ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in results.values():
        s, n = e["summary"], e["summary"]["checkpoints"]
        for lib in ("slt_tms", "devinterp"):
            r = e[lib]
            ess = [x.get("ess", math.nan) for x in r["rows"]]
            cells = [e["name"] if lib == "slt_tms" else "", lib, f"{r['seconds']:.0f}",
                     f"{r['peak_rss_mb']:.0f}", f"{_median(ess):.0f} ({min(ess):.0f})"]
            if lib == "slt_tms":
                cells += ["", f"{s['ours_ok']} of {n}", "", ""]
            else:
                blocks = [x.get("ess_blocks", math.nan) for x in r["rows"]]
                cells += [f"{_median(blocks):.0f} ({min(blocks):.0f})", "not checked",
                          f"**{s['wall_ratio']:.2f}** (slt_tms ESS >= devinterp's at "
                          f"{s['ours_ess_at_least_devinterp']} of {n})",
                          f"{s['per_ess_ratio']:.2f} (block ESS: {s['per_ess_ratio_blocks']:.1f})"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for e in results.values():
        lines.append(f"{e['name']}, per checkpoint: step: slt_tms lambda_hat +/- SE [ESS] / devinterp "
                     "lambda_hat [ESS, block ESS]")
        cells = []
        for o, d in zip(e["slt_tms"]["rows"], e["devinterp"]["rows"], strict=True):
            mark = "" if o["ok"] else "*"
            dess, dblk = d.get("ess", math.nan), d.get("ess_blocks", math.nan)
            cells.append(f"{o['step']}: {o['llc']:.2f}{mark} +/- {o['se']:.2f} [{o['ess']:.0f}] / "
                         f"{d['llc']:.2f} [{dess:.0f}, {dblk:.0f}]")
        lines.append("; ".join(cells))
        lines.append("")
    lines.append("* = flagged by slt_tms (not converged, chains escaped, ...); devinterp has no such check.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 checkpoints, tiny chains")
    ap.add_argument("--only", default="mlp,lm", help="comma-separated subset of mlp,lm")
    ap.add_argument("--max-draws", type=int, default=MAX_DRAWS,
                    help=f"slt_tms's draw budget per chain (LLCConfig.max_draws; default {MAX_DRAWS}; the "
                    "library's own default is 20000)")
    ap.add_argument("--devinterp-draws", type=int, default=DEVINTERP["num_draws"],
                    help=f"devinterp's num_draws (default: its README's {DEVINTERP['num_draws']})")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", nargs=3, metavar=("LIB", "PROBLEM", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        lib, prob, d = args.worker
        print(json.dumps(worker(lib, prob, Path(d), args.seed, args.quick, args.max_draws,
                                args.devinterp_draws), default=float))
        return 0
    threads = thread_count()
    if threads is None:
        return 2
    import devinterp

    problems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(problems) - {"mlp", "lm"})
    if unknown:
        print(f"unknown problem(s) {unknown}; choose from mlp, lm", file=sys.stderr)
        return 2
    torch.set_num_threads(threads)
    names = {"mlp": "MLP 2-8-1 (33 params), n = 1000",
             "lm": f"GPT-2, 1 layer ({{d}} params), n = {LM_ROWS} x {SEQ} tokens"}
    work = Path(tempfile.mkdtemp(prefix="bench-series-"))
    results: dict[str, Any] = {}
    t_all = time.perf_counter()
    try:
        for prob in problems:
            d = work / prob
            info = train(prob, args.seed, d, args.quick)
            n_params = sum(p.numel() for p in (make_mlp() if prob == "mlp" else make_lm()).parameters())
            entry: dict[str, Any] = {"name": names[prob].format(d=n_params), "num_parameters": n_params,
                                     "training": info, "localization": LOCALIZATION}
            for lib in ("slt_tms", "devinterp"):
                t0 = time.perf_counter()
                entry[lib] = _spawn(lib, prob, d, args)
                print(f"{prob} {lib:10s} {time.perf_counter() - t0:7.1f} s", flush=True)
            entry["summary"] = summarize(entry)
            results[prob] = entry
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(results)
    print()
    print(text)
    record = {
        "command": (f"OMP_NUM_THREADS={threads} benchmarks/.venv-bench/bin/python "
                    "benchmarks/bench_series_vs_devinterp.py "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "torch": torch.__version__, "devinterp": getattr(devinterp, "__version__", "2.0.1"),
        "threads": threads, "machine": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()), "total_seconds": time.perf_counter() - t_all,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "devinterp_settings": {**DEVINTERP, "num_draws": args.devinterp_draws}, "results": results,
        "table": text,
    }
    write_record(Path(args.out), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
