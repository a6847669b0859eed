// Bundles each entry into one ES module under frontend/vendor/, and gathers the licences of
// everything bundled into frontend/vendor/LICENSES.txt. Run by `make vendor`.
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

const ENTRIES = { "markdown-kit": "markdown-kit.js", "code-editor": "code-editor.js" };
// Files shipped already built, copied as they are: the API docs pages (/docs, /redoc) load them
// from the app, since the CSP allows no CDN and a deployment may have no network.
const COPIES = {
  "api-docs/swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
  "api-docs/swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
  "api-docs/redoc.standalone.js": "redoc/bundles/redoc.standalone.js",
};
// The built files go beside the pages, which the app serves; this folder is not served.
const out = new URL("../../frontend/vendor/", import.meta.url).pathname;

const bundled = new Set();
for (const [name, entry] of Object.entries(ENTRIES)) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    format: "esm",
    minify: true,
    target: "es2020",
    legalComments: "none",
    metafile: true,
    outfile: join(out, `${name}.js`),
  });
  for (const input of Object.keys(result.metafile.inputs)) {
    const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (match) bundled.add(match[1]);
  }
}

// ReDoc's menu loads its maker's logo from cdn.redoc.ly whatever the options; with the CSP that
// is a blocked request and a console error on every load. An empty src makes its onError hide it.
const PATCHES = { "api-docs/redoc.standalone.js": ["https://cdn.redoc.ly/redoc/logo-mini.svg", ""] };

const notices = [];
for (const [target, source] of Object.entries(COPIES)) {
  const to = join(out, target);
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(join("node_modules", source), to);
  if (PATCHES[target]) {
    const [from, replacement] = PATCHES[target];
    const text = readFileSync(to, "utf8");
    if (text.split(from).length !== 2) throw new Error(`${target}: expected "${from}" once; check the patch`);
    writeFileSync(to, text.replace(from, replacement));
  }
  bundled.add(source.split("/")[0]);
  // What these prebuilt files bundle in turn, as their authors list it.
  const listed = join("node_modules", `${source}.LICENSE.txt`);
  if (existsSync(listed)) notices.push(`${target} bundles (from ${source}.LICENSE.txt):\n${readFileSync(listed, "utf8").trim()}\n`);
}

const sections = [...bundled].sort().map((pkg) => {
  const dir = join("node_modules", pkg);
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = file && existsSync(join(dir, file)) ? readFileSync(join(dir, file), "utf8").trim() : `License: ${meta.license}`;
  return `${pkg} ${meta.version} (${meta.license})\n${"-".repeat(60)}\n${text}\n`;
});
writeFileSync(
  join(out, "LICENSES.txt"),
  `Third-party code bundled into frontend/vendor/ by \`make vendor\`.\n\n${[...sections, ...notices].join("\n\n")}`,
);
console.log(
  `vendor: ${Object.keys(ENTRIES).length} bundle(s), ${Object.keys(COPIES).length} copied file(s), ` +
    `${bundled.size} package(s): ${[...bundled].sort().join(", ")}`,
);
