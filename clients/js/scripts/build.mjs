// Build the package (dist/: ESM + type declarations) and the two files the web process serves
// (api/static/taskcast.js, an ES module; api/static/taskcast-elements.js, a classic script that
// defines the elements). The served files are committed, so Python users need no Node.js; CI
// rebuilds them and fails when they differ.
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const staticDir = fileURLToPath(new URL("../../../api/static/", import.meta.url));
const banner = (what) =>
  `// ${what}\n// Built from clients/js (npm run build); do not edit by hand.`;

rmSync(`${root}/dist`, { recursive: true, force: true });
execFileSync(process.execPath, [`${root}/node_modules/typescript/bin/tsc`, "-p", `${root}/tsconfig.build.json`], {
  stdio: "inherit",
});

const common = { bundle: true, target: "es2020", legalComments: "none", logLevel: "warning" };
await build({
  ...common,
  entryPoints: [`${root}/src/index.ts`],
  format: "esm",
  outfile: `${staticDir}/taskcast.js`,
  banner: { js: banner("taskcast.js: the taskcast client as one ES module (@taskcast/client).") },
});
await build({
  ...common,
  entryPoints: [`${root}/src/elements-define.ts`],
  format: "iife",
  globalName: "taskcast",
  outfile: `${staticDir}/taskcast-elements.js`,
  banner: {
    js: banner("taskcast-elements.js: <taskcast-progress> and <taskcast-tasks>, one <script> tag."),
  },
});
