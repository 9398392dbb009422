/**
 * Per-request crypto cost (issue 13): CPU milliseconds per operation on the coordinator's and a
 * node's hot paths, measured with process.cpuUsage (wall time is printed too, but on a shared
 * machine only CPU time is comparable).
 *
 *   node bin/run-ts.js bench/crypto-request-bench.ts [--n 300]
 *
 * Coordinator: `verifyRequest` as the coordinator calls it (the node's key as the armored text the
 * database returns), next to 'openpgp-reference': what every request cost before the key cache
 * and the native path (parse the armored key, judge it, openpgp.verify). Also opening a sealed
 * 13 KB update, signing a 13 KB model (beside openpgp.sign). Node: signing a request, sealing a 13 KB
 * update, verifying a signed 13 KB model.
 * Sealing and opening 13 KB and 4 MB updates (native-seal.ts) beside OpenPGP.js doing the same.
 * Prints one JSON line per figure, then {"figure":"summary",...}.
 */
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as openpgp from 'openpgp';
import {
  canonicalRequestString, clearPublicKeyCache, generateIdentity, keyStatus, loadPrivateKey, loadPublicKey, openUpdate, sealUpdate, sha256Hex,
  signArtifact, signRequest, verifyArtifact, verifyRequest,
} from '../protocols/crypto/index.ts';

export interface Figure { figure: string; side: 'coordinator' | 'node'; cpuMsPerOp: number; wallMsPerOp: number; n: number }

async function measure(figure: string, side: Figure['side'], n: number, op: () => Promise<unknown>, print: boolean): Promise<Figure> {
  for (let i = 0; i < Math.min(20, n); i++) await op(); // warm-up (JIT, caches)
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await op();
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  const result = { figure, side, cpuMsPerOp: +((cpu.user + cpu.system) / 1000 / n).toFixed(4), wallMsPerOp: +(wall / n).toFixed(4), n };
  if (print) console.log(JSON.stringify(result));
  return result;
}

/** The pre-cache request check: parse the key, judge it now, openpgp.verify (no nonce store). */
async function openpgpReference(armoredKey: string, headers: Record<string, string>, body: Uint8Array): Promise<void> {
  const key = await loadPublicKey(armoredKey);
  if ((await keyStatus(key)) !== 'valid') throw new Error('key not valid');
  const canonical = canonicalRequestString({ method: 'POST', path: '/v1/x', roundId: 'r1', timestamp: headers['fedmark-timestamp'], nonce: headers['fedmark-nonce'], bodySha256: sha256Hex(body) });
  const { signatures } = await openpgp.verify({
    message: await openpgp.createMessage({ binary: new TextEncoder().encode(canonical) }),
    signature: await openpgp.readSignature({ binarySignature: Buffer.from(headers['fedmark-signature'], 'base64') }),
    verificationKeys: key,
    date: new Date(headers['fedmark-timestamp']),
    format: 'binary',
  });
  await signatures[0].verified;
}

/** Every figure, measured `n` times each (fewer for the slow ones); `print` writes one JSON line per figure as it is measured. */
export async function cryptoRequestBench(n = 300, print = false): Promise<Figure[]> {
  const node = await generateIdentity({ name: 'bench node', passphrase: 'p' });
  const coordinator = await generateIdentity({ name: 'bench coordinator', passphrase: 'p' });
  const nodeKey = await loadPrivateKey(node.privateKeyArmored, 'p');
  const coordinatorKey = await loadPrivateKey(coordinator.privateKeyArmored, 'p');
  const body = new Uint8Array(2048);
  const headers = await signRequest({ privateKey: nodeKey, method: 'POST', path: '/v1/x', roundId: 'r1', body });
  const update = new Uint8Array(13_000);
  const sealed = await sealUpdate({ bytes: update, coordinatorPublicKey: coordinator.publicKeyArmored, nodePrivateKey: nodeKey });
  const modelSignature = await signArtifact(update, coordinatorKey);
  const figures: Figure[] = [];
  const m = (figure: string, side: Figure['side'], count: number, op: () => Promise<unknown>) => measure(figure, side, count, op, print);
  const verify = () => verifyRequest({ publicKey: node.publicKeyArmored, method: 'POST', path: '/v1/x', roundId: 'r1', body, headers, seenNonce: () => false });
  figures.push(await m('verifyRequest (armored key from the database)', 'coordinator', n, verify));
  figures.push(await m('verifyRequest, cold key cache (first request after a key change)', 'coordinator', Math.min(n, 100), () => { clearPublicKeyCache(); return verify(); }));
  figures.push(await m('openpgp-reference (before: parse key + keyStatus + openpgp.verify)', 'coordinator', n, () => openpgpReference(node.publicKeyArmored, headers, body)));
  figures.push(await m('openUpdate 13 KB (armored node key)', 'coordinator', Math.min(n, 100), () => openUpdate({ sealed, coordinatorPrivateKey: coordinatorKey, nodePublicKey: node.publicKeyArmored })));
  figures.push(await m('signRequest', 'node', n, () => signRequest({ privateKey: nodeKey, method: 'POST', path: '/v1/x', roundId: 'r1', body })));
  figures.push(await m('sealUpdate 13 KB (armored coordinator key)', 'node', Math.min(n, 100), () => sealUpdate({ bytes: update, coordinatorPublicKey: coordinator.publicKeyArmored, nodePrivateKey: nodeKey })));
  figures.push(await m('verifyArtifact 13 KB model (armored coordinator key)', 'node', n, () => verifyArtifact(update, modelSignature, coordinator.publicKeyArmored)));
  // The coordinator signs every round's model and audit checkpoint (signed-artifact.ts).
  figures.push(await m('signArtifact 13 KB model', 'coordinator', n, () => signArtifact(update, coordinatorKey)));
  figures.push(await m('openpgp-reference signArtifact 13 KB (openpgp.sign, before the native path)', 'coordinator', Math.min(n, 100), async () => openpgp.sign({ message: await openpgp.createMessage({ binary: update }), signingKeys: coordinatorKey, detached: true, format: 'armored' })));
  // Sealing and opening natively (native-seal.ts) next to OpenPGP.js doing the same message.
  const coordinatorPublic = await loadPublicKey(coordinator.publicKeyArmored);
  const nodePublic = await loadPublicKey(node.publicKeyArmored);
  const openpgpSeal = (bytes: Uint8Array) => async () => openpgp.encrypt({ message: await openpgp.createMessage({ binary: bytes }), encryptionKeys: coordinatorPublic, signingKeys: nodeKey, format: 'binary' });
  const openpgpOpen = (message: Uint8Array) => async () => {
    const opened = await openpgp.decrypt({ message: await openpgp.readMessage({ binaryMessage: message }), decryptionKeys: coordinatorKey, verificationKeys: nodePublic, expectSigned: true, format: 'binary' });
    await opened.signatures[0].verified;
  };
  figures.push(await m('openpgp-reference seal 13 KB (openpgp.encrypt, before native-seal.ts)', 'node', Math.min(n, 100), openpgpSeal(update)));
  figures.push(await m('openpgp-reference open 13 KB (openpgp.decrypt + verify)', 'coordinator', Math.min(n, 100), openpgpOpen(sealed)));
  const large = new Uint8Array(4_000_000).map((_, i) => i & 0xff); // a 1M-parameter float32 update
  const sealedLarge = await sealUpdate({ bytes: large, coordinatorPublicKey: coordinatorPublic, nodePrivateKey: nodeKey });
  const few = Math.max(5, Math.min(20, Math.round(n / 15)));
  figures.push(await m('sealUpdate 4 MB', 'node', few, () => sealUpdate({ bytes: large, coordinatorPublicKey: coordinatorPublic, nodePrivateKey: nodeKey })));
  figures.push(await m('openpgp-reference seal 4 MB', 'node', few, openpgpSeal(large)));
  figures.push(await m('openUpdate 4 MB', 'coordinator', few, () => openUpdate({ sealed: sealedLarge, coordinatorPrivateKey: coordinatorKey, nodePublicKey: nodePublic })));
  figures.push(await m('openpgp-reference open 4 MB', 'coordinator', few, openpgpOpen(sealedLarge)));
  return figures;
}

// Run directly: one JSON line per figure, then the summary (`npm run bench -- --only crypto` runs it too).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { n: { type: 'string', default: '300' } } });
  const figures = await cryptoRequestBench(Number(values.n), true);
  console.log(JSON.stringify({ figure: 'summary', loadavg: (await import('node:os')).loadavg(), figures }));
}
