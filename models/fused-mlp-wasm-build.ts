/**
 * Reassembles models/fused-mlp-kernels.wat into the base64 constant of models/fused-mlp-wasm.ts.
 * Needs wabt's wat2wasm on the PATH (apt-get install wabt). Run after editing the .wat:
 *   node bin/run-ts.js models/fused-mlp-wasm-build.ts
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('./fused-mlp-kernels.wat', import.meta.url));
const target = fileURLToPath(new URL('./fused-mlp-wasm.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'fused-mlp-wasm-'));
try {
  const out = join(dir, 'kernels.wasm');
  execFileSync('wat2wasm', [source, '-o', out], { stdio: 'inherit' });
  const base64 = readFileSync(out).toString('base64');
  const text = readFileSync(target, 'utf8');
  const next = text.replace(/const KERNELS_BASE64 = '[^']*';/, `const KERNELS_BASE64 = '${base64}';`);
  if (next === text && !text.includes(base64)) throw new Error('KERNELS_BASE64 not found in fused-mlp-wasm.ts');
  writeFileSync(target, next);
  console.log(`fused-mlp-wasm.ts: ${readFileSync(out).length} bytes of WASM`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
