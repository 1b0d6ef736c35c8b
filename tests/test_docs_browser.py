"""The documentation site and the reproduction report, opened in a real browser (headless Chromium).

Checks what a reader sees and a static check of the HTML cannot: MathJax (shipped with the site, no CDN)
typesets the math (``mjx-container`` elements, no MathJax errors, no ``\\(`` or ``\\[`` left in the text
outside code), and every ``<img>`` of the reproduction report decodes (``naturalWidth > 0``): of a
synthetic report, of a real ``slt-tms reproduce`` of a few cheap stages (with the paper-beside-ours
table and the figure map checked too) and, with ``REPORT_DIR``, of a full run.

Needs ``chromium`` (or ``chromium-browser``; ``CHROMIUM=/path`` overrides) and skips with the reason when
there is none. Driven by the ``playwright`` Python package when installed (with the system Chromium via
``executable_path``: no browser download), otherwise by ``chromium --headless --dump-dom`` on a wrapper
page that runs the same check in an iframe.

Environment:

* ``SITE_DIR``: a built site (``make docs`` writes ``site/``) to check instead of building the two pages
  (the estimators guide and the estimators API page) into a temporary directory; with it every page that
  has math is checked.
* ``REPORT_DIR``: the output folder of ``slt-tms reproduce`` (with its ``index.html``), whose images are
  checked; a small synthetic report is always checked.
* ``SLT_TMS_BROWSER_DRIVER=cli`` forces the ``--dump-dom`` driver.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from _child import child_env

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("estimators/index.html", "api/estimators/index.html")


def _chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium/chromium-browser on PATH: browser tests skipped (apt-get install chromium)",
)

# One check, run in the page (Playwright) or on an iframe's window and document (--dump-dom wrapper).
CHECK_JS = r"""
async (win, doc) => {
  const mj = win.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    await mj.startup.promise;
  }
  const images = Array.from(doc.images);
  await Promise.all(images.map((img) => img.decode().catch(() => null)));
  const body = doc.body.cloneNode(true);
  body.querySelectorAll("pre, code, script, style, textarea, mjx-container").forEach((e) => e.remove());
  const text = body.textContent;
  return {
    mathjax: Boolean(mj && mj.version),
    arithmatex: doc.querySelectorAll(".arithmatex").length,
    containers: doc.querySelectorAll("mjx-container").length,
    errors: doc.querySelectorAll("mjx-merror, [data-mjx-error]").length,
    raw: (text.match(/\\\(|\\\[/g) || []).length,
    raw_context: (text.match(/.{0,40}(\\\(|\\\[).{0,40}/) || [""])[0],
    images: images.map((img) => ({alt: img.alt, width: img.naturalWidth})),
    tables: Array.from(doc.querySelectorAll("table")).map((t) => t.id || ""),
    verdicts: Array.from(doc.querySelectorAll("#paper-vs-ours tbody tr")).map(
      (tr) => [tr.id, tr.lastElementChild.querySelector("b").textContent]),
    figures: Array.from(doc.querySelectorAll("#figure-map-table tbody tr")).map(
      (tr) => [tr.firstElementChild.textContent, tr.lastElementChild.querySelector("b").textContent]),
  };
}
"""

WRAPPER = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><pre id="out">pending</pre>
<iframe id="frame" style="width:1200px;height:900px"></iframe>
<script>
const check = %s;
const frame = document.getElementById("frame");
frame.addEventListener("load", () => {
  check(frame.contentWindow, frame.contentDocument)
    .then((r) => { document.getElementById("out").textContent = JSON.stringify(r); })
    .catch((e) => { document.getElementById("out").textContent = JSON.stringify({failed: String(e)}); });
});
frame.src = new URLSearchParams(location.search).get("page");
</script></body></html>
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/__check__.html"):
            data = (WRAPPER % CHECK_JS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_Handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _use_playwright() -> bool:
    if os.environ.get("SLT_TMS_BROWSER_DRIVER", "").lower() == "cli":
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def _check_pages(base: str, pages: list[str]) -> dict[str, dict]:
    """Open each page and return what CHECK_JS found there."""
    if _use_playwright():
        from playwright.sync_api import sync_playwright

        results = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                for name in pages:
                    page.goto(base + name, wait_until="load")
                    results[name] = page.evaluate(f"({CHECK_JS})(window, document)")
            finally:
                browser.close()
        return results
    results = {}
    for name in pages:
        url = base + "__check__.html?page=" + urllib.parse.quote("/" + name)
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        m = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
        assert m and m.group(1) != "pending", f"{name}: no result from --dump-dom: {proc.stderr[-2000:]}"
        results[name] = json.loads(html.unescape(m.group(1)))
    return results


def _build_site(tmp: Path) -> Path:
    """Build the estimators guide and the estimators API page with the project's mkdocs.yml."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")
    docs = tmp / "docs"
    (docs / "api").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "estimators.md", docs / "estimators.md")
    shutil.copy(ROOT / "docs" / "api" / "estimators.md", docs / "api" / "estimators.md")
    shutil.copytree(ROOT / "docs" / "assets", docs / "assets")
    (tmp / "docs_hooks").symlink_to(ROOT / "docs_hooks")  # hooks and the griffe extension, by relative path
    (tmp / "mkdocs.yml").write_text(
        f"INHERIT: {ROOT / 'mkdocs.yml'}\n"
        f"docs_dir: {docs}\n"
        "strict: false\n"  # links to the pages left out; `make docs` builds everything strictly
        "nav:\n  - Estimators: estimators.md\n  - API: api/estimators.md\n"
        "validation:\n  links:\n    not_found: info\n    anchors: info\n"
    )
    env = child_env(SLT_TMS_NO_PROGRESS="1")
    config, out = str(tmp / "mkdocs.yml"), str(tmp / "site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-q", "-f", config, "-d", out],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp / "site"


def test_math_is_typeset_in_the_browser(tmp_path, serve):
    site_env = os.environ.get("SITE_DIR")
    if site_env:
        site = Path(site_env)
        assert (site / "index.html").is_file(), f"SITE_DIR={site_env} holds no built site"
        with_math = sorted(
            str(p.relative_to(site))
            for p in site.rglob("*.html")
            if "assets" not in p.parts and 'class="arithmatex"' in p.read_text(errors="replace")
        )
        pages = sorted(set(PAGES) | set(with_math))
    else:
        site = _build_site(tmp_path)
        pages = list(PAGES)
    for name in PAGES:
        assert (site / name).is_file(), f"{name} was not built"
    results = _check_pages(serve(site), pages)
    for name, r in results.items():
        assert r["mathjax"], f"{name}: MathJax did not load ({r})"
        assert r["arithmatex"] > 0, f"{name}: no math found on the page"
        assert r["containers"] > 0, f"{name}: MathJax rendered nothing ({r})"
        assert r["errors"] == 0, f"{name}: {r['errors']} MathJax errors"
        assert r["raw"] == 0, f"{name}: raw TeX delimiters left in the text: {r['raw_context']!r}"


def _synthetic_report(tmp: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slt_tms.io.report import write_report

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp / "figure.png")
    plt.close(fig)
    summary = {"profile": "test", "seed": 0, "stages": [{"name": "s", "ok": True, "files": ["figure.png"]}]}
    write_report(tmp, summary)
    return tmp


#: A real reproduction that fits in a test: the theory stage (Table A.1, the c = 6 losses and rank(H)/2 of
#: the paper-beside-ours table) and two quick figures of Elhage et al. (2022).
CHEAP_STAGES = ("theory", "superposition-phase-diagram", "superposition-dimensionality")


def test_reproduction_report_in_the_browser(tmp_path, serve):
    """``slt-tms reproduce`` (a cheap subset of stages) writes a report whose every image decodes in a real
    browser and which has the paper-beside-ours table, the figure map and the stage tables."""
    out = tmp_path / "results"
    env = child_env(SLT_TMS_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "slt_tms", "reproduce", "--profile", "quick", "--out", str(out), "--quiet",
         "--only", *CHEAP_STAGES],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = _check_pages(serve(out), ["index.html"])["index.html"]
    images = result["images"]
    assert len(images) >= 2, images  # the phase diagram and the dimensionality figure
    assert all(img["width"] > 0 for img in images), f"images that do not decode: {images}"
    assert {"paper-vs-ours", "figure-map-table"} <= set(result["tables"])
    assert len(result["tables"]) >= 2 + 5  # and the theory stage's critical-point tables (c = 4..8)
    verdicts = dict(result["verdicts"])
    for key in ("A1-4", "A1-5", "A1-6", "loss-5", "loss-6", "lambda-5", "lambda-6"):
        assert verdicts[f"paper-{key}"] == "agrees", (key, verdicts)  # computed from the theory stage
    assert verdicts["paper-K1-5"] == "not compared"  # the llc stage did not run
    figures = dict(result["figures"])
    assert figures["superposition/phase_diagram.png"] == "present"
    assert figures["superposition/dimensionality.png"] == "present"
    assert figures["dynamics/llc_vs_step.png"] == "not run"
    assert "missing" not in figures.values()


@pytest.mark.parametrize("source", ["synthetic", "REPORT_DIR"])
def test_report_images_decode(tmp_path, serve, source):
    if source == "REPORT_DIR":
        report = os.environ.get("REPORT_DIR")
        if not report or not (Path(report) / "index.html").is_file():
            pytest.skip("REPORT_DIR is not set to the output folder of a reproduction (with index.html)")
        root = Path(report)
    else:
        root = _synthetic_report(tmp_path)
    result = _check_pages(serve(root), ["index.html"])["index.html"]
    assert result["images"], "the report has no images"
    broken = [img["alt"] for img in result["images"] if img["width"] <= 0]
    assert not broken, f"images that do not decode: {broken}"
