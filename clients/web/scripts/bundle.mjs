// Builds the demo page into dist/ (committed, embedded in the node binary, checked by CI
// against a fresh build): dist/index.html and dist/presence-demo.js.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
await mkdir(join(root, "dist"), { recursive: true });
await build({
  entryPoints: [join(root, "demo/main.ts")],
  outfile: join(root, "dist/presence-demo.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});
await copyFile(join(root, "demo/index.html"), join(root, "dist/index.html"));
