// Validates AsyncAPI documents with @asyncapi/parser (v3): prints every
// diagnostic and exits 1 when any is an error (severity 0).
// Usage: node tools/asyncapi/validate.mjs FILE...
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const parser = new Parser();
let errors = 0;
for (const file of process.argv.slice(2)) {
  const diagnostics = await parser.validate(readFileSync(file, 'utf8'));
  const bad = diagnostics.filter((d) => d.severity === 0);
  for (const d of diagnostics) {
    const level = ['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity;
    console.log(`${file}: ${level}: ${d.code}: ${d.message} at /${(d.path || []).join('/')}`);
  }
  console.log(`${file}: ${bad.length} errors, ${diagnostics.length - bad.length} other diagnostics`);
  errors += bad.length;
}
process.exit(errors > 0 ? 1 : 0);
