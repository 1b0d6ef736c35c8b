"""The closed-form Hessian of the population loss (bounded memory) and the up-front memory refusal of the
k-gon certification (``slt-tms llc --tms-critical NAME --c C`` with a large C)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

import slt_tms.theory.point_analysis as pa
from slt_tms.cli import main
from slt_tms.theory._evaluate import loss_hessian_flat
from slt_tms.theory.critical_points import (
    _exact_gradient_is_zero,
    _exact_point,
    critical_points,
    family_point,
    kgon,
)
from slt_tms.theory.point_analysis import analyse_point, analysis_memory_bytes, check_analysis_memory
from slt_tms.theory.symbolic import population_loss_flat


def _autograd_hessian(w: torch.Tensor, c: int, r: int = 2) -> torch.Tensor:
    """The former Hessian of point_analysis: a vectorised double backward over all d basis vectors."""
    return torch.autograd.functional.hessian(lambda x: population_loss_flat(x, c, r), w, vectorize=True)


def _closed_form(w: torch.Tensor, c: int, r: int = 2) -> torch.Tensor:
    return loss_hessian_flat(w[: r * c].reshape(r, c), w[r * c:])


def _points(c: int) -> list[torch.Tensor]:
    """Random points (every region of the pair terms) and k-gon points with their one-sided probes
    (kinks of the pair terms: a_ii + b_i = 0, (a_ij, b_i) = (0, 0), dead columns)."""
    g = torch.Generator().manual_seed(c)
    pts = [torch.randn(3 * c, generator=g, dtype=torch.float64) * s for s in (0.3, 1.0, 2.0)]
    for k in range(2, min(c, 6) + 1):
        for sigma, phi in ((0, 0), (min(1, c - k), 0), (0, 1 if k == 4 else 0), (0, 2 if k == 4 else 0)):
            W, b = family_point(k, c, sigma, phi)
            w = torch.as_tensor(np.concatenate([W.reshape(-1), b]))
            u = pa._probe_directions(3 * c, 1)[0]
            pts += [w, w + 1e-6 * u, w - 1e-6 * u]
    return pts


@pytest.mark.parametrize("c", [2, 3, 4, 6, 9])
def test_closed_form_hessian_equals_autograd_hessian(c):
    for w in _points(c):
        H_old, H_new = _autograd_hessian(w, c), _closed_form(w, c)
        scale = max(1.0, float(H_old.abs().max()))
        assert torch.allclose(H_new, H_old, rtol=0, atol=1e-14 * scale), float((H_new - H_old).abs().max())
        assert torch.equal(pa._hessian(w, c), H_new)


def test_closed_form_hessian_general_r():
    for c, r in ((5, 3), (4, 1)):
        w = torch.randn(r * c + c, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        H_old = _autograd_hessian(w, c, r)
        assert torch.allclose(_closed_form(w, c, r), H_old, rtol=0, atol=1e-14 * float(H_old.abs().max()))


def test_closed_form_hessian_at_large_c_matches_hessian_vector_products():
    """c = 400 (d = 1200): the autograd Hessian would hold d x c x c temporaries (over 10 GB); the closed
    form is checked against a few exact Hessian-vector products (double backward, O(c^2) memory)."""
    c = 400
    W, b = family_point(6, c, 3)
    g = torch.Generator().manual_seed(0)
    w = torch.as_tensor(np.concatenate([W.reshape(-1), b])) + 0.01 * torch.randn(3 * c, generator=g,
                                                                                  dtype=torch.float64)
    H = pa._hessian(w, c)
    assert H.shape == (3 * c, 3 * c)
    x = w.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(population_loss_flat(x, c), x, create_graph=True)
    for v in torch.randn(3, 3 * c, generator=g, dtype=torch.float64):
        (hv,) = torch.autograd.grad(gr @ v, x, retain_graph=True)
        assert torch.allclose(H @ v, hv, rtol=0, atol=1e-12 * float(hv.abs().max()))


def test_analysis_memory_estimate():
    assert analysis_memory_bytes(1000) == 16 * 8 * 3000**2  # 1.15 GB
    check_analysis_memory(6)  # tiny: always fine


def test_huge_c_is_refused_before_any_work():
    """c = 10**6 would need about 1.15 PB: refused at once (no family solve, no allocation)."""
    with pytest.raises(ValueError, match=r"c = 1000000 needs the 3000000 x 3000000 float64 Hessian") as e:
        kgon(6, 10**6)
    msg = str(e.value)
    assert "\n" not in msg and "PB of memory" in msg and "use a smaller c" in msg
    with pytest.raises(ValueError, match=r"analysis of a point at c = 1000000"):
        analyse_point(torch.zeros(3 * 10**6, dtype=torch.float64), 10**6)
    with pytest.raises(ValueError, match="certification of the critical points at c = 1000000"):
        critical_points(10**6, progress=False)


def test_refusal_against_the_available_memory(monkeypatch):
    monkeypatch.setattr(pa, "_available_memory", lambda: (2 * 10**9, "available memory"))
    # c = 1000 needs 1.15 GB > half of 2 GB; c = 880 (0.89 GB) would fit
    with pytest.raises(ValueError, match=r"about 1\.15 GB of memory, more than the 1 GB allowed \(half of "
                                         r"the 2 GB of available memory\); use a smaller c \(at most about "
                                         r"931 here\)"):
        kgon(6, 1000)
    check_analysis_memory(880)
    monkeypatch.setattr(pa, "_available_memory", lambda: None)  # unknown: not checked
    check_analysis_memory(10**6)


def test_ulimit_v_caps_the_available_memory(monkeypatch):
    monkeypatch.setattr(pa.resource, "getrlimit", lambda _: (1 << 20, pa.resource.RLIM_INFINITY))
    avail = pa._available_memory()
    assert avail == (0, "address space left under ulimit -v")  # 1 MB, less than the process already holds
    with pytest.raises(ValueError, match=r"ulimit -v.*free memory or use a smaller c"):
        check_analysis_memory(6)


def test_cli_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["llc", "--tms-critical", "6", "--c", "1000000", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slt-tms: error: the certification of the critical point 6 at c = 1000000 needs")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_exact_gradient_decision_with_repeated_pair_arguments():
    """The exact (sympy) gradient test evaluates each distinct pair argument once: still True at the exact
    k-gons (also at c = 200, several seconds with one substitution per pair), False off them."""
    for k, c, sigma, phi in ((4, 4, 0, 0), (4, 6, 1, 2), (2, 5, 2, 0), (4, 200, 3, 1)):
        W, b = _exact_point(k, c, sigma, phi, list(range(k - phi, k)))
        assert _exact_gradient_is_zero(W, b), (k, c, sigma, phi)
    W, b = _exact_point(4, 6, 1, 0, [])
    b[4] = sp.Rational(1, 7)  # not the optimal positive dead bias 1/(2c) = 1/12
    assert not _exact_gradient_is_zero(W, b)
    W, b = _exact_point(4, 6, 0, 0, [])
    W[0, 4] = sp.Rational(1, 3)  # a dead column that is not dead
    assert not _exact_gradient_is_zero(W, b)
