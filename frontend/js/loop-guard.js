// Loop protection for the live preview: every loop in the learner's JavaScript gets a check that
// stops it once the page has run for a second without a break, so `while (true) {}` never hangs
// the preview (a hung frame cannot be replaced: a new one lands in the same busy renderer).
// The same idea as CodePen's and JS Bin's loop-protect, on acorn's syntax tree.
//
// The learner's own code must not be able to switch it off (issue 25): the check's name is new
// for every run of the preview (code written before cannot name it, or shadow it), it is a
// read-only global, and it keeps its own copies of the clock and of the channel it uses, taken
// before any learner code runs. A stopped run stays stopped (every check throws) until control
// returns to the event loop, so an outer loop that catches the error cannot start the clock again.
// Code in strings (eval, new Function, setTimeout("…")) is refused by the page's CSP (no
// 'unsafe-eval'), and the loops of inline event handlers (onclick="…") are guarded too.

import { parseJavaScript } from "../vendor/code-editor.js";

const LOOPS = new Set(["WhileStatement", "DoWhileStatement", "ForStatement", "ForInStatement", "ForOfStatement"]);
export const LIMIT_MS = 1000;

/** A fresh guard name: a preview's code is protected with it and its guardScript defines it. */
export function newGuardName() {
  const random = new Uint32Array(2);
  crypto.getRandomValues(random);
  return `__taskwireLoopGuard_${random[0].toString(36)}${random[1].toString(36)}`;
}

// Runs first in the preview. A run of the page's code is "since" the first check with no return
// to the event loop in between: a message posted to itself clears it once control comes back.
function preamble(guard) {
  return `(() => {
  const now = Performance.prototype.now.bind(performance);
  const post = MessagePort.prototype.postMessage;
  const tell = parent.postMessage.bind(parent);
  const stop = RangeError;
  const channel = new MessageChannel();
  let since = null, stopped = false;
  channel.port1.onmessage = () => { since = null; stopped = false; };
  Object.defineProperty(window, "${guard}", { value: (line) => {
    if (stopped) throw new stop("Taskwire stopped a loop that ran for over a second.");
    const at = now();
    if (since === null) { since = at; post.call(channel.port2, 0); return; }
    if (at - since > ${LIMIT_MS}) {
      stopped = true;
      tell({ taskwire: "loop-stopped", line }, "*");
      throw new stop("Taskwire stopped a loop on line " + line + " that ran for over a second.");
    }
  }, writable: false, configurable: false, enumerable: false });
})();`;
}

/** `source` with a call of `guard` at the top of every loop body; unchanged when it does not parse. */
export function protectLoops(source, guard, { firstLine = 1, sourceType = "script", handler = false } = {}) {
  let tree;
  try {
    tree = parseJavaScript(source, {
      ecmaVersion: "latest",
      sourceType,
      locations: true,
      allowReturnOutsideFunction: handler, // an event handler attribute is a function's body
    });
  } catch {
    return source; // the browser will not run it either, and will say why
  }
  const inserts = [];
  visit(tree, (node) => {
    if (!LOOPS.has(node.type)) return;
    const call = `${guard}(${node.loc.start.line + firstLine - 1});`;
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

/** The learner's HTML with the loops of its inline scripts and event handler attributes protected too. */
export function protectHtmlScripts(html, guard) {
  const scripts = html.replace(
    /(<script\b([^>]*)>)([\s\S]*?)(?=<\/script|$)/gi,
    (whole, open, attributes, body, offset) => {
      const type = scriptType(attributes);
      if (/\bsrc\s*=/i.test(attributes) || type === null) return whole;
      const firstLine = html.slice(0, offset + open.length).split("\n").length;
      return open + protectLoops(body, guard, { firstLine, sourceType: type });
    },
  );
  // onclick="…" and the like, in any quoting, any number to a tag: entity-encoded HTML text.
  return scripts.replace(TAG, (tag) =>
    tag.replace(HANDLER, (whole, space, name, equals, quoted) => {
      const quote = quoted[0] === '"' || quoted[0] === "'" ? quoted[0] : "";
      const code = decodeEntities(quote ? quoted.slice(1, -1) : quoted);
      const guarded = protectLoops(code, guard, { handler: true });
      if (guarded === code) return whole;
      return `${space}${name}${equals}"${guarded.replace(/&/g, "&amp;").replace(/"/g, "&quot;")}"`;
    }),
  );
}

// A start tag with its attributes (quoted values may hold ">"), and an event handler among them.
const TAG = /<[a-zA-Z][^\s/>]*(?:\s+[^\s"'>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?)*\s*\/?>/g;
const HANDLER = /(\s)(on[a-z]+)(\s*=\s*)("[^"]*"|'[^']*'|[^\s"'>]+)/gi;

/** The script that must run before any of the learner's code in the preview, defining `guard`. */
export function guardScript(guard) {
  return `<script>${preamble(guard)}<\/script>`;
}

// The text an attribute's value stands for (&amp; → &), read as the HTML parser reads one, in
// a parsed document nothing runs or loads in. The value came from between quotes of one kind,
// so it can sit between the other kind here.
function decodeEntities(text) {
  const quote = text.includes('"') ? "'" : '"';
  const parsed = new DOMParser().parseFromString(`<p title=${quote}${text}${quote}>`, "text/html");
  return parsed.body.firstElementChild?.getAttribute("title") ?? text;
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
