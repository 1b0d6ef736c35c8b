"""A self-contained HTML report of a reproduction run.

:func:`write_report` reads what the stages of ``slt-tms reproduce`` wrote into ``DIR`` and renders
``DIR/index.html``: first the paper beside ours (every number of Chen et al. 2023 that the run
reproduces, with its source, our value read from the stage files and a verdict computed from the two:
:func:`slt_tms.io.paper.paper_rows`) and the figure map (which of our figures stands for which figure of
the papers, and whether the run produced it: :func:`slt_tms.io.paper.figure_rows`); then one section per
stage with its status and run time, every CSV table as an HTML table, every PNG embedded inline (base64,
so the page is a single file), the headline numbers of the stage's JSON results, and at the end the
configuration, the seeds and the versions of the packages. No number of ours is typed in here: the page
shows the files the stages wrote, so the numbers in the report are the ones the stages (and the tests
that check them) produced.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from slt_tms.io.atomic import atomic_write_text
from slt_tms.io.paper import figure_rows, paper_rows

__all__ = ["package_versions", "relative_path", "write_report"]

_PACKAGES = ("slt_tms", "torch", "numpy", "scipy", "sympy", "arviz", "matplotlib", "safetensors")
_MAX_TABLE_ROWS = 60
_MAX_JSON_CHARS = 4000


def package_versions(names: Sequence[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of the packages the numbers depend on (plus Python and the platform)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _esc(x: object) -> str:
    return html.escape(str(x))


def _csv_table(path: Path) -> str:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return "<p><em>empty table</em></p>"
    head, body = rows[0], rows[1:]
    more = ""
    if len(body) > _MAX_TABLE_ROWS:
        more = f"<p><em>{len(body) - _MAX_TABLE_ROWS} more rows in {_esc(path.name)}</em></p>"
        body = body[:_MAX_TABLE_ROWS]
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_esc(_fmt_cell(c))}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>{more}"


def _fmt_cell(cell: str) -> str:
    try:
        v = float(cell)
    except ValueError:
        return cell
    if cell.strip().lstrip("-").isdigit():
        return cell
    return f"{v:.6g}"


def _figure_id(rel: str) -> str:
    """The anchor of a figure in the page, from its path under the output folder."""
    return "fig-" + "".join(ch if ch.isalnum() else "-" for ch in rel)


def _png(path: Path, rel: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure id="{_esc(_figure_id(rel))}"><img alt="{_esc(path.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{_esc(rel)}</figcaption></figure>'
    )


def _json_block(path: Path) -> str:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"<p><em>could not read {_esc(path.name)}: {_esc(exc)}</em></p>"
    text = json.dumps(_trim(obj), indent=1)
    if len(text) > _MAX_JSON_CHARS:
        text = text[:_MAX_JSON_CHARS] + "\n... (truncated; full file beside this page)"
    return f"<details><summary>{_esc(path.name)}</summary><pre>{_esc(text)}</pre></details>"


def _trim(obj: Any, depth: int = 0) -> Any:
    """Shorten long lists (traces) so the JSON preview stays readable."""
    if isinstance(obj, dict):
        return {k: _trim(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) > 12:
            return [*(_trim(v, depth + 1) for v in obj[:6]), f"... {len(obj) - 6} more"]
        return [_trim(v, depth + 1) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    return obj


def _stage_section(stage: dict[str, Any], root: Path) -> str:
    status = "ok" if stage.get("ok") else "FAILED"
    cls = "ok" if stage.get("ok") else "failed"
    parts = [
        f'<section id="{_esc(stage["name"])}"><h2>{_esc(stage["name"])} '
        f'<span class="{cls}">{status}</span></h2>'
    ]
    if stage.get("description"):
        parts.append(f"<p>{_esc(stage['description'])}</p>")
    note = (
        " (up to date: outputs of an earlier run with the same code, profile and seed)"
        if stage.get("cached")
        else ""
    )
    parts.append(f"<p class='meta'>{float(stage.get('seconds', 0.0)):.1f} s{_esc(note)}</p>")
    if stage.get("error"):
        parts.append(f"<pre class='error'>{_esc(stage['error'])}</pre>")
    files = [Path(f) for f in stage.get("files", [])]
    files = [f if f.is_absolute() else (root / f) for f in files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        items = "".join(f"<li>{_esc(relative_path(f, root))}</li>" for f in missing)
        parts.append(
            f"<div class='error'><b>MISSING</b>: {len(missing)} file(s) this stage wrote are not in the "
            f"output directory any more:<ul>{items}</ul></div>"
        )
    for f in files:
        if f.suffix == ".csv" and f.exists():
            parts.append(f"<h3>{_esc(f.name)}</h3>" + _csv_table(f))
    for f in files:
        if f.suffix == ".png" and f.exists():
            parts.append(_png(f, relative_path(f, root)))
    for f in files:
        if f.suffix == ".json" and f.exists():
            parts.append(_json_block(f))
    others = [f for f in files if f.suffix not in (".csv", ".png", ".json")]
    if others:
        items = "".join(f"<li>{_esc(relative_path(f, root))}</li>" for f in others)
        parts.append(f"<p>Other files:</p><ul>{items}</ul>")
    parts.append("</section>")
    return "\n".join(parts)


#: Verdict -> CSS class of its cell.
_STATUS_CLASS = {"agrees": "agree", "present": "agree", "differs": "differ", "not compared": "na",
                 "not run": "na", "missing": "failed", "not in the map": "differ"}


def _paper_section(root: Path, stages: Sequence[dict[str, Any]]) -> str:
    rows = paper_rows(root, stages)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    head = "".join(f"<th>{h}</th>" for h in ("quantity", "paper", "source", "ours", "from", "verdict"))
    body = []
    for r in rows:
        notes = "".join(f"<br><small>{_esc(t)}</small>" for t in (r["detail"], r["caveat"]) if t)
        if r["why"]:
            notes += f"<br><small><b>why</b>: {_esc(r['why'])}</small>"
        cls = _STATUS_CLASS.get(r["status"], "")
        body.append(
            f"<tr id='paper-{_esc(r['key'])}'><td class='l'>{_esc(r['quantity'])}</td><td>{_esc(r['paper'])}"
            f"</td><td class='l'>{_esc(r['source'])}</td><td>{_esc(r['ours'])}</td>"
            f"<td class='l'><code>{_esc(r['from'])}</code></td>"
            f"<td class='l {cls}'><b>{_esc(r['status'])}</b>{notes}</td></tr>"
        )
    return (
        "<section id='paper'><h2>Paper beside ours</h2>"
        "<p>Every number of Chen et al. (2023) that this run reproduces: the paper's value as printed, "
        "ours as read from the stage's file, and a verdict computed from the two (printed values: equal to "
        "the last printed digit; estimates: within the paper's error bar plus two of our standard errors; "
        f"ranges: overlap; sequences: the order of the transitions). Here: {_esc(tally)}.</p>"
        f"<table id='paper-vs-ours' class='paper'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )


def _figure_section(root: Path, stages: Sequence[dict[str, Any]], profile: str | None = None) -> str:
    rows = figure_rows(root, stages, profile)
    head = "".join(f"<th>{h}</th>" for h in ("our figure", "stage", "shows", "Chen et al. 2023",
                                              "Elhage et al. 2022", "in this run"))
    body = []
    for r in rows:
        name = _esc(r["path"])
        link = f"<a href='#{_esc(_figure_id(r['path']))}'>{name}</a>" if r["status"] == "present" else name
        note = f"<br><small>{_esc(r['note'])}</small>" if r["note"] else ""
        cls = _STATUS_CLASS.get(r["status"], "")
        body.append(
            f"<tr><td class='l'>{link}</td><td class='l'>{_esc(r['stage'])}</td>"
            f"<td class='l'>{_esc(r['shows'])}</td><td class='l'>{_esc(r['chen'])}</td>"
            f"<td class='l'>{_esc(r['elhage'])}</td>"
            f"<td class='l {cls}'><b>{_esc(r['status'])}</b>{note}</td></tr>"
        )
    bad = sum(1 for r in rows if r["status"] == "missing")
    warn = (f"<p class='error'><b>{bad} figure(s) missing</b> from stages of this run.</p>" if bad else "")
    return (
        "<section id='figure-map'><h2>Figure map</h2>"
        "<p>Which of our figures corresponds to which figure of Chen et al. (2023) and of Elhage et al. "
        "(2022) (— : no counterpart).</p>" + warn
        + f"<table id='figure-map-table' class='paper'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )


def relative_path(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` (the output directory), or resolved in full when it lies outside:
    the form in which stage files are recorded and shown, whatever the working directory.

    Examples
    --------
    >>> relative_path(Path("/tmp/out/llc/llc.json"), Path("/tmp/out"))
    'llc/llc.json'
    """
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(path).resolve())


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}
figure{margin:1em 0}
.ok{color:#176b1e;font-size:.7em}.failed{color:#b00020;font-size:.7em}
.meta{color:#666}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:.8em}
.error{background:#fde8e8}
nav a{margin-right:1em}
table.paper td.l,table.paper th{text-align:left}
table.paper{font-size:.8em}
td.agree{background:#e6f4e7}td.differ{background:#fff3d6}td.na{background:#f1f1f1}
td.failed{background:#fde8e8}
"""


def write_report(out_dir: str | Path, summary: dict[str, Any] | None = None) -> Path:
    """Render ``out_dir/index.html`` from the stage summary of a reproduction run.

    Parameters
    ----------
    out_dir : path
        The folder ``slt-tms reproduce`` wrote into.
    summary : dict, optional
        The run summary (profile, seed, stages with name/ok/seconds/files/error). Read from
        ``out_dir/reproduce_summary.json`` when omitted.

    Returns
    -------
    Path
        The written ``index.html`` (atomic write).

    Raises
    ------
    FileNotFoundError
        If no summary is given and ``reproduce_summary.json`` is missing.
    """
    root = Path(out_dir)
    if summary is None:
        path = root / "reproduce_summary.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `slt-tms reproduce --out {root}` first")
        summary = json.loads(path.read_text())
    stages = summary.get("stages", [])
    n_ok = sum(1 for s in stages if s.get("ok"))
    nav = "<a href='#paper'>paper beside ours</a><a href='#figure-map'>figure map</a>" + "".join(
        f'<a href="#{_esc(s["name"])}">{_esc(s["name"])}</a>' for s in stages
    )
    versions = summary.get("versions") or package_versions()
    config = {k: v for k, v in summary.items() if k not in ("stages", "versions")}
    body = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>slt_tms reproduction</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>slt_tms: reproduction report</h1>",
        "<p>Reproduces the theory of <em>Dynamical versus Bayesian Phase Transitions in a Toy Model of "
        "Superposition</em> (Chen, Lau, Mendel, Wei, Murfet 2023, arXiv 2310.06301) and the toy-model "
        "figures of Elhage et al. (2022).</p>",
        f"<p>Profile <b>{_esc(summary.get('profile', '?'))}</b>, root seed "
        f"<b>{_esc(summary.get('seed', '?'))}</b>; {n_ok} of {len(stages)} stages succeeded; generated "
        f"{_esc(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}.</p>",
        f"<nav>{nav}</nav>",
    ]
    body += [_paper_section(root, stages), _figure_section(root, stages, summary.get("profile"))]
    body += [_stage_section(s, root) for s in stages]
    body.append("<section id='config'><h2>Configuration and versions</h2>")
    body.append(f"<pre>{_esc(json.dumps(config, indent=1, default=str))}</pre>")
    vt = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in versions.items())
    body.append(f"<table>{vt}</table></section></body></html>")
    return atomic_write_text(root / "index.html", "\n".join(body))
