// Markdown to HTML for model answers and exercise text, with markdown-it (CommonMark: headings,
// links, nested lists, tables, fenced code) and DOMPurify, both vendored (frontend/vendor/,
// `make vendor`). Raw HTML in the input is not rendered (html: false) and the output is
// sanitised again, so no tag or attribute from a model or an author can run in the page.

import { DOMPurify, MarkdownIt } from "../vendor/markdown-kit.js";

const markdown = new MarkdownIt({ html: false, linkify: true, typographer: false }).enable("table");

// Links in answers lead away from the tutor: a new tab, and no access back to this page.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(text) {
  return DOMPurify.sanitize(markdown.render(String(text ?? "")), { ADD_ATTR: ["target"] });
}
