// Typesets the maths with the KaTeX shipped in docs/assets/katex (no CDN, so
// the site renders offline). Markdown pages mark their maths with
// pymdownx.arithmatex, as \( \) and \[ \]; notebook pages keep the notebooks'
// $...$ and $$...$$. Headings repeated in the navigation are typeset too.
// Code is never touched (auto-render skips <pre> and <code>).
const brackets = [
  { left: "\\(", right: "\\)", display: false },
  { left: "\\[", right: "\\]", display: true },
];
const dollars = [
  { left: "$$", right: "$$", display: true },
  { left: "$", right: "$", display: false },
];

document$.subscribe(({ body }) => {
  const notebook = body.querySelector(".jupyter-wrapper") !== null;
  const typeset = (selector, delimiters) => {
    for (const element of body.querySelectorAll(selector)) {
      renderMathInElement(element, { delimiters, throwOnError: false });
    }
  };
  typeset(".arithmatex", brackets);
  typeset(".md-nav__link .md-ellipsis", notebook ? [...dollars, ...brackets] : brackets);
  if (notebook) {
    typeset(".jp-RenderedMarkdown", [...dollars, ...brackets]);
  }
});
