"""The griffe extension that turns the docstrings' Sphinx markup into Markdown for the docs site."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

pytest.importorskip("griffe")

_PATH = Path(__file__).resolve().parents[1] / "docs_hooks" / "griffe_sphinx_roles.py"
_spec = importlib.util.spec_from_file_location("griffe_sphinx_roles", _PATH)
roles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(roles)

RAW = re.compile(r":(?:py:)?[a-z]+:`|\.\. math::")


def test_inline_math_and_multiline_math():
    text = "Loss :math:`L_n(w)` and :math:`U(w) = n L_n(w) + \\tfrac12\\lVert w\n    \\rVert^2` here."
    out = roles.rewrite_docstring(text)
    assert r"\(L_n(w)\)" in out
    assert r"\(U(w) = n L_n(w) + \tfrac12\lVert w \rVert^2\)" in out
    assert not RAW.search(out)


def test_display_math_directive_forms():
    text = inspect.cleandoc(
        r"""
        Summary.

        .. math::

            a = b \\
            c = d

        Text.
        .. math:: x = 1

        More.
        """
    )
    out = roles.rewrite_docstring(text)
    assert not RAW.search(out)
    assert "\\[\n\\begin{aligned}\na = b \\\\\nc = d\n\\end{aligned}\n\\]" in out
    assert "\n\n\\[\nx = 1\n\\]\n\nMore." in out


def test_indented_directive_keeps_its_indentation():
    text = "Summary.\n\nParameters\n----------\nx : float\n    The value\n\n    .. math:: y = x^2\n\n    ."
    out = roles.rewrite_docstring(text)
    assert "    \\[\n    y = x^2\n    \\]" in out
    assert "x : float" in out


def test_cross_reference_roles():
    out = roles.rewrite_docstring(
        "See :class:`~slt_tms.tms.model.TMS`, :func:`torch.func.vmap`, :py:meth:`a <b.c>` and :ref:`x`."
    )
    assert '<autoref identifier="slt_tms.tms.model.TMS" optional><code>TMS</code></autoref>' in out
    assert '<autoref identifier="torch.func.vmap" optional><code>torch.func.vmap</code></autoref>' in out
    assert '<autoref identifier="b.c" optional><code>a</code></autoref>' in out
    assert "`x`" in out
    assert not RAW.search(out)


def test_type_fields_become_plain_and_prose_types_become_descriptions():
    text = inspect.cleandoc(
        """
        Summary.

        Attributes
        ----------
        model : :class:`~slt_tms.tms.model.TMS`
            The model.
        loss : population loss :math:`L(w_T)`
        """
    )
    out = roles.rewrite_docstring(text)
    assert "model : TMS\n    The model." in out
    assert "loss\n    population loss \\(L(w_T)\\)" in out


def test_code_is_left_alone():
    text = 'Summary.\n\n>>> s = ":math:`x`"\n\n```python\ny = ":func:`f`"\n```\n\n``literal``'
    assert roles.rewrite_docstring(text) == text


def test_every_package_docstring_is_rewritten_completely():
    griffe = pytest.importorskip("griffe")
    pkg = griffe.load("slt_tms", extensions=griffe.load_extensions(f"{_PATH}:SphinxRoles"))
    seen = 0
    stack = [pkg]
    while stack:
        obj = stack.pop()
        if obj.docstring is not None:
            seen += 1
            assert not RAW.search(obj.docstring.value), obj.path
        stack.extend(m for m in obj.members.values() if not m.is_alias)
    assert seen > 100


def test_simple_tables_links_and_citations():
    text = inspect.cleandoc(
        """
        Summary with `safetensors <https://example.org/st>`_ and [AW05]_.

        =====  =====================
        name   meaning
        =====  =====================
        ``a``  :func:`f` of ``x | y``
        b      a | b
        =====  =====================

        References
        ----------
        .. [AW05] M. Aoyagi and S. Watanabe,
           Neural Networks, 2005.
        .. [W09] S. Watanabe, 2009.
        """
    )
    out = roles.rewrite_docstring(text)
    assert "[safetensors](https://example.org/st) and [AW05]." in out
    assert "| name | meaning |\n| --- | --- |\n" in out
    assert '| ``a`` | <autoref identifier="f" optional><code>f</code></autoref> of ``x | y`` |' in out
    assert "| b | a \\| b |" in out
    assert "----------\n**[AW05]** M. Aoyagi and S. Watanabe,\n   Neural Networks, 2005.\n\n**[W09]**" in out
    assert "=====" not in out and ".. [" not in out
