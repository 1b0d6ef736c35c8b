// MathJax 3 configuration for pymdownx.arithmatex (generic mode): it wraps math in
// <span class="arithmatex">\(...\)</span> and <div class="arithmatex">\[...\]</div>; only those are typeset,
// so a backslash-parenthesis in code or text is left alone. The links of the sidebar's table of contents
// (class "reference") are typeset too: a heading with math appears there as plain text.
// MathJax itself is copied into the site by docs_hooks/mathjax.py (no CDN) and loaded right after this file.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|reference",
  },
  svg: {
    fontCache: "global",
  },
};
