// Loop protection for the live preview: every loop in the learner's JavaScript gets a check that
// stops it once the page has run for a second without a break, so `while (true) {}` never hangs
// the preview (a hung frame cannot be replaced: a new one lands in the same busy renderer).
// The same idea as CodePen's and JS Bin's loop-protect, on acorn's syntax tree.

import { parseJavaScript } from "../vendor/code-editor.js";

const GUARD = "__taskwireLoopGuard";
const LOOPS = new Set(["WhileStatement", "DoWhileStatement", "ForStatement", "ForInStatement", "ForOfStatement"]);
export const LIMIT_MS = 1000;

// Runs first in the preview. A run of the page's code is "since" the first check with no return
// to the event loop in between: a message posted to itself clears it once control comes back.
const PREAMBLE = `(() => {
  let since = null;
  const channel = new MessageChannel();
  channel.port1.onmessage = () => { since = null; };
  window.${GUARD} = (line) => {
    const now = performance.now();
    if (since === null) { since = now; channel.port2.postMessage(0); return; }
    if (now - since > ${LIMIT_MS}) {
      since = null;
      parent.postMessage({ taskwire: "loop-stopped", line }, "*");
      throw new RangeError("Taskwire stopped a loop on line " + line + " that ran for over a second.");
    }
  };
})();`;

/** `source` with a guard call at the top of every loop body; unchanged when it does not parse. */
export function protectLoops(source, { firstLine = 1, sourceType = "script" } = {}) {
  let tree;
  try {
    tree = parseJavaScript(source, { ecmaVersion: "latest", sourceType, locations: true });
  } catch {
    return source; // the browser will not run it either, and will say why
  }
  const inserts = [];
  visit(tree, (node) => {
    if (!LOOPS.has(node.type)) return;
    const call = `${GUARD}(${node.loc.start.line + firstLine - 1});`;
    if (node.body.type === "BlockStatement") {
      inserts.push([node.body.start + 1, call]);
    } else {
      inserts.push([node.body.start, `{${call}`], [node.body.end, "}"]);
    }
  });
  inserts.sort((a, b) => b[0] - a[0]);
  let out = source;
  for (const [at, text] of inserts) out = out.slice(0, at) + text + out.slice(at);
  return out;
}

/** The learner's HTML with the loops of its inline scripts protected too. */
export function protectHtmlScripts(html) {
  return html.replace(/(<script\b([^>]*)>)([\s\S]*?)(?=<\/script|$)/gi, (whole, open, attributes, body, offset) => {
    const type = scriptType(attributes);
    if (/\bsrc\s*=/i.test(attributes) || type === null) return whole;
    const firstLine = html.slice(0, offset + open.length).split("\n").length;
    return open + protectLoops(body, { firstLine, sourceType: type });
  });
}

/** The script that must run before any of the learner's code in the preview. */
export function guardScript() {
  return `<script>${PREAMBLE}<\/script>`;
}

// "script" or "module" for the ways a browser runs a <script>, null for data blocks it does not.
function scriptType(attributes) {
  const type = attributes.match(/\btype\s*=\s*["']?([^"'\s>]+)/i)?.[1]?.toLowerCase();
  if (type === "module") return "module";
  return !type || type.includes("javascript") || type.includes("ecmascript") ? "script" : null;
}

function visit(node, onNode) {
  if (!node || typeof node.type !== "string") return;
  onNode(node);
  for (const key of Object.keys(node)) {
    const value = node[key];
    if (Array.isArray(value)) value.forEach((child) => visit(child, onNode));
    else if (value && typeof value === "object" && typeof value.type === "string") visit(value, onNode);
  }
}
