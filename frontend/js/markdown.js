// Markdown to HTML for model and exercise text. Every character of the input is escaped
// first; only then are a few constructs (code, bold, italics, lists, paragraphs) added, so
// no tag or attribute from the input can ever reach the page.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function inline(escaped) {
  return escaped
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[\s(])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>");
}

export function renderMarkdown(text) {
  const blocks = String(text).split(/\n```/);
  let html = "";
  blocks.forEach((block, index) => {
    if (index % 2 === 1) {
      const body = block.replace(/^[^\n]*\n/, ""); // drop the language tag line
      html += `<pre><code>${escapeHtml(body.replace(/\n?$/, ""))}</code></pre>`;
      return;
    }
    for (const para of block.split(/\n{2,}/)) {
      const lines = para.split("\n").filter((line) => line.trim() !== "");
      if (!lines.length) continue;
      if (lines.every((line) => /^\s*([-*]|\d+\.)\s+/.test(line))) {
        const tag = /^\s*\d+\./.test(lines[0]) ? "ol" : "ul";
        const items = lines.map((line) => `<li>${inline(escapeHtml(line.replace(/^\s*([-*]|\d+\.)\s+/, "")))}</li>`);
        html += `<${tag}>${items.join("")}</${tag}>`;
      } else {
        html += `<p>${lines.map((line) => inline(escapeHtml(line))).join("<br>")}</p>`;
      }
    }
  });
  return html;
}
