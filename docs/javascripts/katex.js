// Typesets the maths marked by pymdownx.arithmatex, and only that: notebook
// pages bring their own MathJax (mkdocs-jupyter), which handles theirs.
document$.subscribe(({ body }) => {
  for (const element of body.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
});
