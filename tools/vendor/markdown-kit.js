// Entry of frontend/vendor/markdown-kit.js: Markdown rendering, HTML sanitising and code
// highlighting for the pages (only the languages a web tutor's answers use).
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import css from "highlight.js/lib/languages/css";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import xml from "highlight.js/lib/languages/xml";

for (const [name, language] of Object.entries({ bash, css, javascript, json, python, xml })) {
  hljs.registerLanguage(name, language);
}
hljs.registerAliases(["html", "svg"], { languageName: "xml" });
hljs.registerAliases(["js"], { languageName: "javascript" });
hljs.registerAliases(["sh", "shell"], { languageName: "bash" });

export { hljs };
export { default as MarkdownIt } from "markdown-it";
export { default as DOMPurify } from "dompurify";
