// Build the npm package from the one source of the browser client, the module the server
// serves at /static/realtime/client.js: copy it to dist/ and generate its TypeScript
// declarations from its JSDoc with tsc (the TypeScript pinned in the repository's
// package-lock.json). Run by `npm pack` (prepack) and by tests/unit/client/test_js_package.py.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const source = join(repo, "realtime", "static", "realtime", "client.js");
const dist = join(here, "dist");
const tsc = join(repo, "node_modules", "typescript", "bin", "tsc");

mkdirSync(dist, { recursive: true });
copyFileSync(source, join(dist, "client.js"));
execFileSync(process.execPath, [tsc, "-p", join(here, "tsconfig.build.json")], { stdio: "inherit" });
console.log(`built ${dist}/client.js and client.d.ts`);
