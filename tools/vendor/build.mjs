// Bundles each entry into one ES module under frontend/vendor/, and gathers the licences of
// everything bundled into frontend/vendor/LICENSES.txt. Run by `make vendor`.
import { build } from "esbuild";
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const ENTRIES = { "markdown-kit": "markdown-kit.js", "code-editor": "code-editor.js" };
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

const sections = [...bundled].sort().map((pkg) => {
  const dir = join("node_modules", pkg);
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = file && existsSync(join(dir, file)) ? readFileSync(join(dir, file), "utf8").trim() : `License: ${meta.license}`;
  return `${pkg} ${meta.version} (${meta.license})\n${"-".repeat(60)}\n${text}\n`;
});
writeFileSync(
  join(out, "LICENSES.txt"),
  `Third-party code bundled into frontend/vendor/*.js by \`make vendor\`.\n\n${sections.join("\n\n")}`,
);
console.log(`vendor: ${Object.keys(ENTRIES).length} bundle(s), ${bundled.size} package(s): ${[...bundled].sort().join(", ")}`);
