r"""The wells of lower loss beside the dead columns of a TMS k-gon, in numbers and in words, for
``slt-tms llc --tms-critical`` and the reproduction's LLC table."""

from __future__ import annotations

from typing import Any

from slt_tms.theory.critical_point import DEAD_BIAS

__all__ = ["lower_wells", "lower_wells_of", "wells_cell", "wells_line"]


def lower_wells(
    k: int, c: int, sigma: int, phi: int, nbetas: list[float], below: list[float], localization: float
) -> dict[str, Any] | None:
    r"""The wells of lower loss next to a TMS k-gon's dead columns, at each inverse temperature of a run.

    A dead column (:math:`W_j = 0`, bias :math:`b_j = -1`) outputs :math:`\mathrm{ReLU}(b_j)`, the same
    for every input, so its share of the population loss is constant for :math:`b_j \le 0` (a flat
    direction) and equals :math:`E[(x_j - b_j)^2]` for :math:`b_j > 0`: lowest at
    :math:`b_j = E[x_j] = 1/(2c)`, by :math:`\Delta L = 1/(4c^2)` (the point with one more ``+``, e.g.
    5+ from 5). Within reach of the localization (:math:`(\gamma/2)(1 + 1/(2c))^2` nats) each of the
    :math:`c - k - \sigma` such columns borders a narrow well (curvature :math:`2n\beta` in :math:`b_j`)
    whose bottom lies :math:`n\beta\,\Delta L` nats below :math:`w^*`. An exact sampler of the localized
    tempered posterior spends draws there in proportion to its weight; a chain that never enters one
    (no draw with :math:`L < L(w^*)`) samples the basin of :math:`w^*` only, which is what the LLC of
    :math:`w^*` describes, not the localized posterior mean the estimate is defined as.

    Parameters
    ----------
    k, c, sigma, phi : int
        The point :math:`k^{\sigma+,\varphi-}` in ``c`` features.
    nbetas : list of float
        The run's inverse temperatures (its ladder's rungs).
    below : list of float
        Each rung's fraction of draws with :math:`L < L(w^*)`.
    localization : float
        :math:`\gamma`.

    Returns
    -------
    dict or None
        None where the point has no dead column with a negative bias, or the localization keeps every
        well above :math:`w^*`; else ``columns``, ``neighbour`` (the lower point's name), ``bias``,
        ``delta_loss``, ``distance``, ``localization_nats`` and per rung ``nbeta``, ``depth_nats``
        (:math:`n\beta\,\Delta L`) and ``draws_below``.

    Examples
    --------
    >>> w = lower_wells(6, 20, 0, 0, [8685.89], [0.0], 1.0)
    >>> w["columns"], w["neighbour"], round(w["depth_nats"][0], 2), round(w["localization_nats"], 3)
    (14, '6+', 5.43, 0.525)
    >>> lower_wells(6, 6, 0, 0, [8685.89], [0.0], 1.0) is None  # no dead column
    True
    """
    columns = c - k - sigma
    if columns <= 0:
        return None
    from slt_tms.theory.kgon_families import dead_bias_optimum  # lazy import (start-up time)

    bias = float(dead_bias_optimum(c)[0])
    delta = bias**2  # E[x_j]^2: the dead output's loss share drops from E[x^2] to E[x^2] - E[x]^2
    distance = bias - DEAD_BIAS
    cost = 0.5 * localization * distance**2
    depths = [nb * delta for nb in nbetas]
    if max(depths) <= cost:
        return None
    return {
        "columns": columns, "neighbour": f"{k}{'+' * (sigma + 1)}" + (f",{phi}-" if phi else ""),
        "bias": bias, "delta_loss": delta, "distance": distance, "localization_nats": cost,
        "nbeta": list(nbetas), "depth_nats": depths, "draws_below": list(below),
    }


def lower_wells_of(result: Any, k: int, c: int, sigma: int, phi: int) -> dict[str, Any] | None:
    """:func:`lower_wells` for an estimate of the point (an ``LLCResult``): its ladder's rungs (or its one
    inverse temperature), their draws below :math:`L(w^*)` and its localization."""
    one = {"nbeta": result.nbeta, "frac_below_anchor": result.frac_below_anchor}
    rungs = result.config.get("rungs") or [one]
    return lower_wells(k, c, sigma, phi, [float(r["nbeta"]) for r in rungs],
                       [float(r["frac_below_anchor"]) for r in rungs], float(result.config["localization"]))


def _depths(w: dict[str, Any]) -> str:
    return " / ".join(f"{-x:.3g}" for x in w["depth_nats"])


def _below(w: dict[str, Any]) -> str:
    return " / ".join(f"{100 * x:.2g}%" for x in w["draws_below"])


def wells_cell(w: dict[str, Any] | None) -> str:
    """The reproduction's LLC table cell for :func:`lower_wells` (its dict, or None: empty)."""
    if w is None:
        return ""
    return (f"{w['columns']} x {w['neighbour']}, {_depths(w)} nats; draws below L(w*) {_below(w)}"
            + ("" if all(w["draws_below"]) else ": the estimate describes the basin of w*"))


def wells_line(w: dict[str, Any]) -> str:
    """The summary's line for :func:`lower_wells` (its dict)."""
    depths, below = _depths(w), _below(w)
    missed = [x == 0 and d > w["localization_nats"] for x, d in zip(w["draws_below"], w["depth_nats"],
                                                                      strict=True)]
    cols = "the dead column" if w["columns"] == 1 else f"each of the {w['columns']} dead columns"
    line = (
        f"  lower wells     {cols} (bias {DEAD_BIAS:g}) borders a point of lower loss ({w['neighbour']}: "
        f"its bias at 1/(2c) = {w['bias']:.3g}, at distance {w['distance']:.3g}, "
        f"{w['localization_nats']:.2g} nats of localization) where nbeta (L - L*) = {depths} at the "
        f"run's nbeta ({' / '.join(f'{x:.6g}' for x in w['nbeta'])}); draws below L(w*): {below}"
    )
    if any(missed):
        lift = 2.0 * max(w["depth_nats"]) / w["distance"] ** 2
        line += (
            " [NO DRAW IN THE WELLS at " + ("every nbeta" if all(missed) else "some nbeta") + ": those "
            "numbers describe the basin of w* (its LLC), not the localized posterior mean, which an exact "
            f"sampler would pull towards the wells; a --localization above {lift:.3g} lifts their bottoms "
            "above w*]"
        )
    return line

