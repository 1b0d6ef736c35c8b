"""MkDocs hook: ship MathJax 3 with the site, offline.

The math in the pages and docstrings is written for ``pymdownx.arithmatex`` in generic mode (``\\(...\\)``,
``\\[...\\]``), which only marks it up; a browser needs MathJax to typeset it. The site may be read without
network, so no CDN: after each build this hook copies the MathJax files from the installed PyPI package
``django-static-mathjax`` (a plain copy of the MathJax 3 distribution, in the ``docs`` extra) into
``<site>/assets/mathjax/``. ``mkdocs.yml`` loads ``assets/js/mathjax-config.js`` and then
``assets/mathjax/tex-svg.js`` through ``extra_javascript``. The SVG output has its fonts built in, so the
math renders from ``file://`` too (no web-font requests). MathJax itself is not committed to the repository.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.mathjax")

# tex-svg.js is the combined component (TeX input, SVG output with its fonts); the rest is what it may load
# on demand: TeX extensions (autoload, e.g. \boldsymbol), the context menu and its accessibility tools.
_FILES = ("tex-svg.js",)
_DIRS = ("input/tex/extensions", "ui", "a11y", "sre")
TARGET = Path("assets") / "mathjax"


def mathjax_root() -> Path:
    """The ``es5`` directory of the installed MathJax distribution (``django-static-mathjax``)."""
    try:
        import mathjax  # the import name of django-static-mathjax
    except ImportError as exc:
        raise RuntimeError(
            "MathJax is missing: install the docs extra (pip install -e '.[docs]'), which brings "
            "django-static-mathjax"
        ) from exc
    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / "tex-svg.js").is_file():
        raise RuntimeError(f"no MathJax 3 distribution found at {root}")
    return root


def on_post_build(config, **kwargs) -> None:
    root = mathjax_root()
    dest = Path(config["site_dir"]) / TARGET
    dest.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        shutil.copy2(root / name, dest / name)
    for name in _DIRS:
        shutil.copytree(root / name, dest / name, dirs_exist_ok=True)
    log.debug("MathJax copied from %s to %s", root, dest)
