// MathJax for pymdownx.arithmatex (generic mode): the docstrings' \( ... \) and $$ ... $$
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true},
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"},
};
document$.subscribe(() => {
  if (window.MathJax.typesetPromise) {
    window.MathJax.typesetPromise();
  }
});
