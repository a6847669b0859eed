// Entry of frontend/vendor/markdown-kit.js: Markdown rendering and HTML sanitising for the pages.
export { default as MarkdownIt } from "markdown-it";
export { default as DOMPurify } from "dompurify";
