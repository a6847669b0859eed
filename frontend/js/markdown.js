// Markdown to HTML for model answers and exercise text, with markdown-it (CommonMark: headings,
// links, nested lists, tables, fenced code), highlight.js and DOMPurify, all vendored
// (frontend/vendor/, `make vendor`). Raw HTML in the input is not rendered (html: false) and
// the output is sanitised again, so no tag or attribute from a model or an author can run.

import { DOMPurify, MarkdownIt, hljs } from "../vendor/markdown-kit.js";

const markdown = new MarkdownIt({
  html: false,
  linkify: true,
  highlight(code, language) {
    if (!language || !hljs.getLanguage(language)) return ""; // markdown-it escapes it plainly
    try {
      return hljs.highlight(code, { language, ignoreIllegals: true }).value;
    } catch {
      return "";
    }
  },
});

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

const FENCE = /^ {0,3}(```|~~~)/gm;

/**
 * Give every finished code block in `container` a Copy button. `source` is the Markdown it was
 * rendered from: while an answer streams, its last block may still be open (an odd number of
 * fences), and that one gets its button once it closes.
 */
export function addCopyButtons(container, source) {
  const blocks = [...container.querySelectorAll("pre")];
  const open = (String(source ?? "").match(FENCE) ?? []).length % 2 === 1;
  for (const pre of open ? blocks.slice(0, -1) : blocks) {
    if (pre.querySelector(".copy")) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(pre.querySelector("code")?.textContent ?? pre.textContent);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
      setTimeout(() => (button.textContent = "Copy"), 2000);
    });
    pre.append(button);
  }
}
