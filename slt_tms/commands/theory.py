"""``slt-tms theory``: the exact theory of the TMS from the command line.

Subcommands
-----------
``loss``
    Print the sympy-derived pair terms and the assembled closed-form population loss
    (``slt-tms theory loss --c 6 [--r 2] [--latex]``).

Each subcommand is registered by its own ``_register_<name>(subparsers)`` function listed in
``_SUBCOMMANDS``; adding a subcommand means writing one such function (with its handler) and
appending it to that tuple.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from slt_tms.commands._args import add_command
from slt_tms.commands._args import positive_int as _positive_int

__all__ = ["register"]



# ---------------------------------------------------------------------------------------------
# theory loss
# ---------------------------------------------------------------------------------------------
def _loss_handler(args: argparse.Namespace) -> int:
    import sympy as sp

    from slt_tms.theory.symbolic import loss_expression, pair_terms

    show = sp.latex if args.latex else sp.sstr
    diag, off = pair_terms()
    L = loss_expression(args.c, args.r)
    if args.latex:
        lines = [
            r"T_\delta(a, b) = \int_0^1 \left(\delta\mu - \mathrm{ReLU}(\mu a + b)\right)^2 d\mu",
            f"T_1(a, b) = {show(diag)}",
            f"T_0(a, b) = {show(off)}",
            rf"L(W, b) = \frac{{1}}{{c}} \sum_{{i,j}} T_{{\delta_{{ij}}}}(W_i \cdot W_j, b_i)"
            rf" \quad (c = {args.c},\ r = {args.r})",
            f"L = {show(L)}",
        ]
    else:
        lines = [
            "Pair terms T_delta(a, b) = Integral_0^1 (delta*mu - ReLU(mu*a + b))**2 dmu:",
            f"T_1(a, b) [diagonal, i == j] = {show(diag)}",
            f"T_0(a, b) [off-diagonal]     = {show(off)}",
            f"Population loss L(W, b) = (1/c) sum_{{i,j}} T_delta_ij(W_i . W_j, b_i) for c = {args.c}, "
            f"r = {args.r} (W_{{k,i}}: row k, column i; b_{{i}}: bias of feature i):",
            f"L = {show(L)}",
        ]
    sys.stdout.write("\n\n".join(lines) + "\n")
    return 0


def _register_loss(sub: argparse._SubParsersAction) -> None:
    """print the sympy-derived closed-form population loss.

    Print the pair terms T_1 (diagonal) and T_0 (off-diagonal) derived with sympy from the defining integral,
    and the assembled population loss L(W, b) for c features and r hidden dimensions (ReLU, one-hot uniform
    inputs).
    """
    p = add_command(sub, "loss", _register_loss)
    p.add_argument("--c", type=_positive_int, required=True, help="number of features")
    p.add_argument("--r", type=_positive_int, default=2, help="hidden dimensions (default 2)")
    p.add_argument("--latex", action="store_true", help="print LaTeX instead of plain sympy text")
    p.set_defaults(handler=_loss_handler)


# ---------------------------------------------------------------------------------------------
# theory critical-points
# ---------------------------------------------------------------------------------------------
CP_COLUMNS = ("name", "k", "sigma", "phi", "l*", "b*", "loss", "lambda_theory", "index", "zero_modes", "C2",
               "local_min")


def critical_point_rows(c: int, progress: bool | None) -> list[dict]:
    from slt_tms.theory.critical_points import critical_points

    rows = []
    for p in critical_points(c, progress=progress):
        rows.append({
            "name": p.name, "k": p.k, "sigma": p.sigma, "phi": p.phi, "l*": p.length, "b*": p.bias,
            "loss": p.loss, "lambda_theory": p.lambda_theory, "index": p.index,
            "zero_modes": p.num_zero_modes, "C2": p.is_c2, "lambda_reason": p.lambda_reason,
            "local_min": (p.index == 0 and bool(p.extra.get("zero_modes_flat"))) if p.is_c2
            else bool(p.extra["local_min_probe"][0]),
            "local_min_evidence": "Hessian" if p.is_c2 else p.extra["local_min_probe"][1],
        })
    return rows


def _critical_points_handler(args: argparse.Namespace) -> int:
    import csv
    import io
    import json

    if args.output:
        from slt_tms.io.atomic import prepare_output_file

        prepare_output_file(args.output)  # before the work: a bad path is one line, not a late traceback
    rows = critical_point_rows(args.c, False if args.quiet else None)
    if args.format == "json":
        text = json.dumps({"c": args.c, "r": 2, "points": rows}, indent=2) + "\n"
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[*CP_COLUMNS, "lambda_reason"], extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    else:
        def fmt(key: str, v: object) -> str:
            if v is None:
                return "n/a"
            if isinstance(v, bool):
                return "yes" if v else "no"
            if isinstance(v, float):
                return f"{v:.10f}" if key == "loss" else f"{v:.6f}" if key in ("l*", "b*") else f"{v:g}"
            return str(v)

        table = [list(CP_COLUMNS)] + [[fmt(k, r[k]) for k in CP_COLUMNS] for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(CP_COLUMNS))]
        lines = ["  ".join(cell.rjust(w) if j else cell.ljust(w)
                           for j, (cell, w) in enumerate(zip(line, widths, strict=True))) for line in table]
        notes = sorted({r["lambda_reason"].split(";")[0].split(" (")[0]
                        for r in rows if r["lambda_theory"] is None})
        text = (f"k-gon critical points of the TMS population loss, c = {args.c}, r = 2 (sorted by loss)\n"
                + "\n".join(lines) + "\n")
        if notes:
            text += "\nlambda_theory n/a because:\n" + "\n".join(f"  - {n}" for n in notes) + "\n"
    if args.output:
        from slt_tms.io.atomic import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _register_critical_points(sub: argparse._SubParsersAction) -> None:
    """list the certified k-gon critical points (loss, Hessian index, zero modes, lambda).

    Every named k-gon critical point k^{sigma+,phi-} for c features and r = 2 hidden dimensions: (l*, b*)
    solved from the family's stationarity equations over all activity patterns, gradient of the closed form
    certified < 1e-10, C^2 test, Hessian index and zero modes, and lambda = rank(H)/2 for minimally singular
    points (n/a otherwise, with the reason). local_min: from the Hessian where L is C^2, else from a numerical
    probe (random steps and descents from 1e-3 perturbations).
    """
    p = add_command(sub, "critical-points", _register_critical_points)
    p.add_argument("--c", type=_positive_int, required=True, help="number of features (>= 2)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--output", default=None, help="write to this file (atomically) instead of stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_critical_points_handler)


# Subcommand registrars, in the order they appear in ``slt-tms theory --help``.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_loss, _register_critical_points)


def register(subparsers: argparse._SubParsersAction) -> None:
    """exact theory: closed-form loss, critical points, learning coefficients.

    Exact theory of the TMS.
    """
    group = add_command(subparsers, "theory", register)

    def _group_help(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return 2

    group.set_defaults(handler=_group_help)
    sub = group.add_subparsers(dest="theory_command", metavar="SUBCOMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
