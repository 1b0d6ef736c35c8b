"""Griffe extension: rewrite Sphinx/RST markup in docstrings into Markdown before mkdocstrings renders them.

The docstrings of ``slt_tms`` are numpydoc with Sphinx roles and directives, which mkdocstrings (Markdown)
would show literally. This extension rewrites the docstring *text* in memory when griffe loads the package;
the source files are not touched.

* ``:math:`x``` becomes ``\\(x\\)`` (inline math for ``pymdownx.arithmatex`` in generic mode, rendered by the
  MathJax copy that ``docs_hooks/mathjax.py`` ships with the site).
* A ``.. math::`` directive (its content on the same line and/or in the indented block below it) becomes a
  display block ``\\[ ... \\]``; blank-line separated equations become separate blocks and an equation
  with ``\\\\`` or ``&`` is wrapped in ``aligned`` (what Sphinx does).
* Cross-reference roles (``:class:``, ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``, ``:obj:``,
  ``:exc:``, ``:const:``, optionally with a ``py:`` domain, a ``~`` or a ``title <target>``) become the short
  name as inline code, wrapped in an *optional* autorefs cross-reference: a link where the target is
  documented in the API reference, plain code otherwise (optional references never fail ``--strict``).
* RST simple tables (``====  ====`` borders) become Markdown tables, RST hyperlinks Markdown links,
  ``.. [X] ...`` citations bold-labelled paragraphs and ``[X]_`` references ``[X]``.
* In the ``name : type`` lines of numpydoc sections (rendered as code by mkdocstrings) roles and math become
  plain text; a ``name : prose with roles`` line without a description below it becomes ``name`` with that
  prose as its description.

Everything else (doctest examples, fenced code, ``literals``) is left alone. Registered in ``mkdocs.yml``
under ``plugins: mkdocstrings: handlers: python: options: extensions``.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

from griffe import Extension, Object

_XREF_ROLES = "class|func|meth|attr|mod|data|obj|exc|const|type"
_XREF = re.compile(rf":(?:py:)?(?:{_XREF_ROLES}):`(?P<body>[^`]+)`")
_MATH = re.compile(r":math:`(?P<body>[^`]+)`")
_OTHER_ROLE = re.compile(r":(?:py:)?[a-z]+:`(?P<body>[^`]+)`")
_TABLE_BORDER = re.compile(r"^(?P<indent>[ \t]*)=+(?:[ \t]+=+)+[ \t]*$")
_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>[^`<>]+)>`__?")
_CITATION_REF = re.compile(r"\[(?P<label>[A-Za-z][\w.-]*)\]_")
_CITATION = re.compile(r"^(?P<indent>[ \t]*)\.\. \[(?P<label>[^\]]+)\][ \t]+(?P<text>.*)$")
_ANY_ROLE = re.compile(r":(?:py:)?[a-z]+:`")
_ITEM = re.compile(r"^(?P<name>\S[^:]*?)\s+:\s+(?P<type>\S.*)$")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")
_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# numpydoc sections whose unindented lines are ``name : type`` items (the type is rendered as code).
_ITEM_SECTIONS = {
    "parameters",
    "other parameters",
    "returns",
    "yields",
    "receives",
    "raises",
    "warns",
    "warnings",
    "attributes",
    "methods",
}


def _split_target(body: str) -> tuple[str, str]:
    """Return ``(shown, target)`` of a role body: ``title <target>``, ``~a.b.C`` or ``a.b.C``."""
    body = " ".join(body.split())
    m = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", body)
    if m and m["title"]:
        return m["title"], m["target"].lstrip("~!")
    target = body.lstrip("!")
    if target.startswith("~"):
        target = target[1:]
        return target.rsplit(".", 1)[-1], target
    return target, target


def _resolve(obj: Object | None, target: str) -> str:
    """Full path of ``target`` as seen from ``obj`` (best effort; the reference is optional anyway)."""
    target = target.rstrip("()")
    if obj is None:
        return target
    if target.startswith("."):
        module = obj.module.path if not obj.is_module else obj.path
        return f"{module}{target}" if target.count(".") == 1 else target.lstrip(".")
    head, _, tail = target.partition(".")
    try:
        modules = obj.modules_collection.members
    except Exception:
        modules = {}
    if head in modules:
        return target
    try:
        resolved = obj.resolve(head)
    except Exception:
        # Not in scope (e.g. a function of a sibling module named without its module): the unique
        # loaded object whose path ends with the name, if there is one.
        found = _by_suffix(obj).get(target, ())
        return found[0] if len(found) == 1 else target
    return f"{resolved}.{tail}" if tail else resolved


_SUFFIX_INDEX: dict[int, dict[str, list[str]]] = {}


def _by_suffix(obj: Object) -> dict[str, list[str]]:
    """``{"name": [paths], "module.name": [paths], ...}`` over the objects of ``obj``'s packages."""
    collection = obj.modules_collection
    index = _SUFFIX_INDEX.get(id(collection))
    if index is None:
        index = {}
        stack = [m for m in collection.members.values() if not m.is_alias]
        while stack:
            cur = stack.pop()
            parts = cur.path.split(".")
            for k in range(1, len(parts)):
                index.setdefault(".".join(parts[-k:]), []).append(cur.path)
            stack.extend(m for m in cur.members.values() if not m.is_alias)
        _SUFFIX_INDEX[id(collection)] = index
    return index


def _math_inline(body: str) -> str:
    return r"\(" + " ".join(body.split()) + r"\)"


def rewrite_inline(text: str, obj: Object | None = None, *, plain: bool = False) -> str:
    """Rewrite the inline roles of ``text``; ``plain`` gives text without Markdown (for type fields)."""

    def xref(m: re.Match[str]) -> str:
        shown, target = _split_target(m["body"])
        if plain:
            return shown
        ident = _resolve(obj, target)
        return (
            f'<autoref identifier="{html.escape(ident, quote=True)}" optional>'
            f"<code>{html.escape(shown, quote=False)}</code></autoref>"
        )

    def math(m: re.Match[str]) -> str:
        return " ".join(m["body"].split()) if plain else _math_inline(m["body"])

    def other(m: re.Match[str]) -> str:  # unknown roles (e.g. :ref:, :cite:): keep the text as code
        return m["body"] if plain else f"`{m['body']}`"

    text = _MATH.sub(math, text)
    text = _XREF.sub(xref, text)
    text = _OTHER_ROLE.sub(other, text)
    text = _LINK.sub(lambda m: m["text"] if plain else f"[{m['text']}]({m['url']})", text)
    return _CITATION_REF.sub(lambda m: f"[{m['label']}]", text)


def _display(lines: list[str], indent: str) -> list[str]:
    """``\\[ ... \\]`` blocks (one per blank-line separated equation) at ``indent``."""
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    out: list[str] = []
    for part in re.split(r"\n\s*\n", body):
        part = part.strip("\n")
        if not part.strip():
            continue
        if (r"\\" in part or "&" in part) and r"\begin" not in part:
            part = "\\begin{aligned}\n" + part + "\n\\end{aligned}"
        if out:
            out.append("")
        out.append(indent + r"\[")
        out.extend(indent + line if line.strip() else "" for line in part.splitlines())
        out.append(indent + r"\]")
    return out


def _simple_table_end(lines: list[str], start: int) -> int | None:
    """Index of the closing border of the RST simple table whose first border is ``lines[start]``."""
    border = lines[start].rstrip()
    borders = [start]
    for j in range(start + 1, len(lines)):
        if lines[j].rstrip() == border:
            borders.append(j)
        elif not lines[j].strip():
            break
    if len(borders) < 2:
        return None
    return borders[-1]


def _escape_pipes(cell: str) -> str:
    parts = re.split(r"(`+[^`]*`+)", cell)  # leave code spans alone
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def _markdown_table(block: list[str], obj: Object | None) -> list[str]:
    """An RST simple table (``====  ====`` borders) as a Markdown table."""
    border = block[0]
    indent = border[: len(border) - len(border.lstrip())]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
    starts = [a for a, _ in spans]
    borders = [k for k, line in enumerate(block) if line.rstrip() == border.rstrip()]
    header_end = borders[1] if len(borders) == 3 else None

    def cells(line: str) -> list[str]:
        out = []
        for c, a in enumerate(starts):
            b = starts[c + 1] if c + 1 < len(starts) else None
            out.append(line[a:b].strip() if b is not None else line[a:].strip())
        return out

    rows: list[list[str]] = []
    header: list[str] | None = None
    for k, line in enumerate(block):
        if k in borders or not line.strip():
            continue
        row = cells(line)
        if rows and not row[0] and (header_end is None or k > header_end):  # continuation line
            rows[-1] = [f"{p} {q}".strip() for p, q in zip(rows[-1], row, strict=True)]
            continue
        if header_end is not None and k < header_end:
            header = row if header is None else [f"{p} {q}".strip() for p, q in zip(header, row, strict=True)]
        else:
            rows.append(row)

    def fmt(row: list[str]) -> str:
        return indent + "| " + " | ".join(_escape_pipes(rewrite_inline(c, obj)) for c in row) + " |"

    lines = [fmt(header) if header else indent + "|" + " |" * len(starts)]
    lines.append(indent + "|" + " --- |" * len(starts))
    lines.extend(fmt(row) for row in rows)
    return lines


def _blank_before(out: list[str]) -> None:
    """A blank line before a block, unless the block starts a section or follows one already."""
    if out and out[-1].strip() and not _UNDERLINE.match(out[-1]):
        out.append("")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite_docstring(text: str, obj: Object | None = None) -> str:
    """Rewrite the Sphinx/RST markup of a whole (dedented) numpydoc docstring."""
    if ":" not in text and ".. math" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    section = ""
    in_fence = False
    i = 0
    paragraph: list[str] = []  # lines of running text, rewritten together (roles may span lines)

    def flush() -> None:
        if paragraph:
            out.extend(rewrite_inline("\n".join(paragraph), obj).split("\n"))
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _FENCE.match(line):
            flush()
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        if in_fence or stripped.startswith((">>>", "... ")) or stripped == "...":
            flush()
            out.append(line)
            i += 1
            continue
        if i + 1 < len(lines) and stripped and _UNDERLINE.match(lines[i + 1]):
            flush()
            section = stripped.lower()
            out.extend([line, lines[i + 1]])
            i += 2
            continue
        border = _TABLE_BORDER.match(line)
        if border:
            flush()
            j = _simple_table_end(lines, i)
            if j is not None:
                _blank_before(out)
                out.extend(_markdown_table(lines[i : j + 1], obj))
                if j + 1 < len(lines) and lines[j + 1].strip():
                    out.append("")
                i = j + 1
                continue
        citation = _CITATION.match(line)
        if citation:
            flush()
            _blank_before(out)
            paragraph.append(f"{citation['indent']}**[{citation['label']}]** {citation['text']}")
            i += 1
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            flush()
            indent = directive["indent"]
            body = [directive["rest"]] if directive["rest"].strip() else []
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) > len(indent)):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():  # trailing blank lines belong to the text after
                body.pop()
                j -= 1
            _blank_before(out)
            out.extend(_display(body, indent))
            if j < len(lines) and lines[j].strip():
                out.append("")
            i = j
            continue
        if section in _ITEM_SECTIONS and stripped and _indent_of(line) == 0:
            flush()
            item = _ITEM.match(line)
            described = i + 1 < len(lines) and lines[i + 1].strip() and _indent_of(lines[i + 1]) > 0
            if item and not described and _ANY_ROLE.search(item["type"]):
                # ``name : prose with roles`` and no description: the "type" is a description (rendered
                # as code it would show raw LaTeX); make it one.
                out.extend([item["name"], "    " + rewrite_inline(item["type"], obj)])
            else:
                out.append(rewrite_inline(line, obj, plain=True))
            i += 1
            continue
        if not stripped:
            flush()
            out.append(line)
            i += 1
            continue
        paragraph.append(line)
        i += 1
    flush()
    return "\n".join(out)


class SphinxRoles(Extension):
    """Rewrite Sphinx roles and ``.. math::`` directives in every loaded docstring (in memory)."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._done: set[int] = set()

    def _rewrite(self, obj: Object) -> None:
        doc = obj.docstring
        if doc is None or id(doc) in self._done:
            return
        self._done.add(id(doc))
        doc.value = rewrite_docstring(doc.value, obj)
        # A docstring parsed before this point would keep its old sections.
        doc.__dict__.pop("parsed", None)

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        self._rewrite(obj)

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        self._rewrite(pkg)
        for member in pkg.members.values():  # modules (a package's own docstring is not an on_object)
            if not member.is_alias:
                self._rewrite(member)
