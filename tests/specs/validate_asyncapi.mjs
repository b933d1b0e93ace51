// Validates an AsyncAPI document with the official parser (@asyncapi/parser, pinned in
// package.json). Usage: node tests/specs/validate_asyncapi.mjs FILE
// Prints every diagnostic; exits 1 when any has severity error (0), 2 on bad usage.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node tests/specs/validate_asyncapi.mjs FILE");
  process.exit(2);
}
const text = await readFile(file, "utf8");
const parser = new Parser();
const diagnostics = await parser.validate(text, { source: file });
const names = ["error", "warning", "information", "hint"];
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  const where = d.path && d.path.length ? d.path.join(".") : "(document)";
  console.log(`${names[d.severity] ?? d.severity} ${d.code} at ${where}: ${d.message}`);
}
console.log(`${file}: ${errors} error(s), ${diagnostics.length - errors} other diagnostic(s)`);
process.exit(errors > 0 ? 1 : 0);
