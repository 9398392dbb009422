import { frameUpdate, UPDATE_TYPE, UPDATE_WITH_EVALUATION_TYPE } from '../../protocols/update-frame.ts';
import pino from 'pino';
import { hashSecret, newSecret } from '../../coordinator/security.ts';
import request from 'supertest';
import { buildCoordinator } from '../../coordinator/main.ts';
import { loadCoordinatorConfig, type CoordinatorConfig } from '../../coordinator/config.ts';
import type { StudyConfigInput } from '../../protocols/messages.ts';
import { roundBinding, UPDATE_META_HEADER } from '../../protocols/messages.ts';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { BACKEND_NAMES, backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateIdentity, loadPrivateKey, sealUpdate, signRequest, type PrivateKey } from '../../protocols/crypto/index.ts';

/** An enrolled test node: its ids and its own OpenPGP key, as a real node holds them. */
export interface TestNode {
  nodeId: string;
  apiKey: string;
  privateKey: PrivateKey;
  publicKey: string;
}

let spareKeys: Promise<Array<{ privateKey: PrivateKey; publicKey: string }>> | undefined;
/** Node keys are made once per test file (each costs ~70 ms), then handed out in turn. */
export async function testNodeKey(i: number) {
  spareKeys ??= Promise.all(
    Array.from({ length: 6 }, async () => {
      const id = await generateIdentity({ name: 'test node', passphrase: 'test-passphrase-0123' });
      return { privateKey: await loadPrivateKey(id.privateKeyArmored, 'test-passphrase-0123'), publicKey: id.publicKeyArmored };
    }),
  );
  const keys = await spareKeys;
  return keys[i % keys.length];
}

// A response body as bytes, or as JSON when it is JSON: node GETs return both kinds.
export function bytesOrJson(res: any, callback: (err: Error | null, body: unknown) => void) {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    const buf = Buffer.concat(chunks);
    const type = String(res.headers['content-type'] ?? '');
    callback(null, type.includes('json') ? JSON.parse(buf.toString('utf8') || 'null') : buf);
  });
}

export const ADMIN = 'test-admin-token-0123456789abcdef';

/** A tiny study: 2 numeric features + 1 categorical, logistic regression (2 + 3 + 2 = 7 inputs). */
export function tinyStudy(overrides: Partial<StudyConfigInput> = {}): StudyConfigInput {
  return {
    name: 'tiny',
    model: { kind: 'logreg' },
    features: {
      target: { column: 'y', positive: '1' },
      features: [
        { name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 },
        { name: 'b', kind: 'numeric', mean: 0, std: 1, fill: 0 },
        { name: 'c', kind: 'categorical', categories: ['p', 'q', 'r'] },
      ],
    },
    rounds: 3,
    minNodesPerRound: 2,
    roundDeadlineSeconds: 30,
    ...overrides,
  };
}

/**
 * Under DP a study releases an exact field only if it declares it public (issue 10). Suites whose
 * fake nodes send loss, steps, seconds and data counts (defaultMeta) under DP pass their overrides
 * through this: a DP study then declares them public, unless the test chose its own release list
 * or public fields. Evaluations of a DP study must still be the noised form (noisedEvaluation).
 */
export function withPublicMetadata(overrides: Partial<StudyConfigInput>): Partial<StudyConfigInput> {
  const privacy = overrides.privacy;
  if (!privacy || (!privacy.central && !privacy.dpSgd) || overrides.release !== undefined || privacy.publicFields !== undefined) return overrides;
  return { ...overrides, privacy: { ...privacy, publicFields: ['update.loss', 'update.steps', 'update.trainSeconds', 'update.data', 'evaluation.loss', 'status.data'] } };
}

/**
 * A DP study's evaluation report in the noised form (20 bins, noise std 5, the defaults of
 * privacy.evaluation) from a coarse histogram spread onto 20 bins; the counts are taken as the
 * noised ones (a fake node: no noise is drawn here).
 */
export function noisedEvaluation(positives: number[], negatives: number[], bins = 20, noiseStd = 5) {
  const histogram = { bins, positives: new Array<number>(bins).fill(0), negatives: new Array<number>(bins).fill(0) };
  for (let i = 0; i < positives.length; i++) {
    const fine = Math.floor(((i + 0.5) * bins) / positives.length);
    histogram.positives[fine] += positives[i];
    histogram.negatives[fine] += negatives[i];
  }
  const n = Math.max(0, [...histogram.positives, ...histogram.negatives].reduce((s, c) => s + c, 0));
  return { numExamples: n, stats: { kind: 'binary' as const, noise: { mechanism: 'discrete-gaussian' as const, noiseStd }, histogram } };
}

/**
 * The coordinator in this process (HTTP through supertest), on a fresh database of `backend`.
 * The round service reads time from `now` (default: the wall clock plus an offset the test can
 * move with `advanceClock`, so a deadline can pass without waiting for it). Deadline timers still
 * run on real time: after moving the clock, call `built.rounds.advanceRound` to act on it.
 */
export async function inProcessCoordinator(backend: DatabaseBackend, now?: () => Date, configOverrides: Partial<Record<keyof CoordinatorConfig, unknown>> = {}) {
  let clockOffsetMs = 0;
  const clock = now ?? (() => new Date(Date.now() + clockOffsetMs));
  const database = await backend.create();
  const keyDir = mkdtempSync(join(tmpdir(), 'fedmark-keys-'));
  const config = loadCoordinatorConfig({}, { adminToken: ADMIN, databaseUrl: database.databaseUrl, migrationDatabaseUrl: database.migrationDatabaseUrl, dataDir: database.dataDir, maxTaskWaitSeconds: 2, keyDir, keyPassphrase: 'test-coordinator-passphrase', ...configOverrides });
  let enrolled = 0;
  let built = await buildCoordinator(config, pino({ level: 'silent' }), { now: clock });
  await built.rounds.resume();
  const harness = {
    get app() {
      return built.app;
    },
    get built() {
      return built;
    },
    admin(method: 'get' | 'post' | 'delete', path: string) {
      return request(built.app)[method](path).set('authorization', `Bearer ${ADMIN}`);
    },
    /** A signed node request, as the node daemon sends it. */
    /** `sent`: bytes sent instead of the signed ones (a body altered in transit). */
    async nodeRequest(node: TestNode, method: 'get' | 'post', path: string, body?: unknown, options: { roundId?: string; headers?: Record<string, string>; contentType?: string; raw?: Uint8Array; sent?: Uint8Array } = {}) {
      const bytes = options.raw ?? (body === undefined ? new Uint8Array(0) : new TextEncoder().encode(JSON.stringify(body)));
      const signature = await signRequest({ privateKey: node.privateKey, method, path, roundId: options.roundId, body: bytes });
      let req = request(built.app)[method](path).set('authorization', `Bearer ${node.apiKey}`).set(signature).set(options.headers ?? {});
      if (method === 'get') return req.buffer(true).parse(bytesOrJson);
      req = req.set('content-type', options.contentType ?? 'application/json');
      // superagent would re-serialize a Buffer under a JSON content type: send JSON as its exact text.
      return options.raw ? req.send(Buffer.from(options.sent ?? bytes)) : req.send(new TextDecoder().decode(bytes));
    },
    nodeGet(node: TestNode, path: string) {
      return harness.nodeRequest(node, 'get', path);
    },
    nodePost(node: TestNode, path: string, body: unknown, roundId?: string) {
      return harness.nodeRequest(node, 'post', path, body, { roundId });
    },
    async createStudy(config: StudyConfigInput = tinyStudy()) {
      const res = await harness.admin('post', '/v1/studies').send(config);
      if (res.status !== 201) throw new Error(`createStudy: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.id as string;
    },
    /** The operator names the node's jurisdiction on its token (a participant without a profile is refused). */
    /**
     * Enrolls a node through a token and the public enroll route. With `tokenBeforePolicy`, the
     * token is written straight to the database, as one issued before the study or the policy
     * changed: the coordinator refuses to issue a token the study's policy would break, so this is
     * how the round-start check (the last line of defense) gets a node to judge.
     */
    async enroll(studyId: string, nodeName: string, ready = true, region = 'eu', jurisdiction = 'US-CA-CCPA', options: { tokenBeforePolicy?: boolean } = {}): Promise<TestNode> {
      const key = await testNodeKey(enrolled++);
      let token: string;
      if (options.tokenBeforePolicy) {
        token = newSecret('fmenroll');
        await built.db.insertInto('enrollment_tokens').values({ token_hash: hashSecret(token), study_id: studyId, node_name: nodeName, region, jurisdiction, expires_at: new Date(Date.now() + 3600_000) }).execute();
      } else {
        const t = await harness.admin('post', '/v1/enrollment-tokens').send({ studyId, nodeName, region, jurisdiction });
        if (t.status !== 201) throw new Error(`enrollment token: ${t.status} ${JSON.stringify(t.body)}`);
        token = t.body.token;
      }
      const e = await request(built.app).post('/v1/nodes/enroll').send({ token, publicKey: key.publicKey, jurisdiction });
      if (e.status !== 201) throw new Error(`enroll: ${e.status} ${JSON.stringify(e.body)}`);
      const node = { nodeId: e.body.nodeId as string, apiKey: e.body.apiKey as string, ...key };
      if (ready) {
        const r = await harness.nodePost(node, '/v1/nodes/me/status', { state: 'ready' });
        if (r.status !== 204) throw new Error(`status: ${r.status} ${JSON.stringify(r.body)}`);
      }
      return node;
    },
    /** Sends weights as a node does: sealed (encrypted to the coordinator, signed by the node), in a signed request. */
    /**
     * A sealed update, as a node sends it; with `evaluation` (JSON text or a value), that evaluation
     * rides on it (protocols/update-frame.ts); `alter` changes the body after it was signed.
     */
    async submit(node: TestNode, studyId: string, round: number, body: Uint8Array, meta: unknown = defaultMeta(), options: { sealed?: Uint8Array; headers?: Record<string, string>; evaluation?: unknown; alter?: (signed: Uint8Array) => Uint8Array; query?: string } = {}) {
      const sealed = options.sealed ?? (await sealUpdate({ bytes: body, coordinatorPublicKey: built.keyring.current.publicKey, nodePrivateKey: node.privateKey }));
      const metaHeader = JSON.stringify(meta);
      const evaluation = options.evaluation === undefined ? undefined : typeof options.evaluation === 'string' ? options.evaluation : JSON.stringify(options.evaluation);
      const raw = evaluation === undefined ? sealed : frameUpdate(evaluation, sealed);
      return harness.nodeRequest(node, 'post', `/v1/studies/${studyId}/rounds/${round}/updates${options.query ?? ''}`, undefined, {
        raw,
        sent: options.alter?.(raw),
        roundId: roundBinding(studyId, round, metaHeader),
        contentType: evaluation === undefined ? UPDATE_TYPE : UPDATE_WITH_EVALUATION_TYPE,
        headers: { [UPDATE_META_HEADER]: metaHeader, ...(options.headers ?? {}) },
      });
    },
    /**
     * Waits until the background state machine reaches a condition. 30 s: under the full suite's
     * load (two workers on two cores) a round's close once took longer than the former 15 s.
     */
    async until<T>(probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const v = await probe();
        if (v !== undefined) return v;
        if (Date.now() > end) throw new Error('condition not reached in time');
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    /** The round service's clock now. */
    now: clock,
    /** Moves the default clock forward (no effect when the test passed its own `now`). */
    advanceClock(ms: number) {
      clockOffsetMs += ms;
    },
    /** Simulates a coordinator restart: stops everything and opens the same database again, optionally after `downForMs` of (clock) time. */
    async restart(options: { downForMs?: number } = {}) {
      await built.rounds.stop();
      await built.db.destroy();
      clockOffsetMs += options.downForMs ?? 0;
      built = await buildCoordinator(config, pino({ level: 'silent' }), { now: clock });
      await built.rounds.resume();
    },
    async close() {
      await built.rounds.stop();
      await built.db.destroy();
      await database.drop();
      rmSync(keyDir, { recursive: true, force: true });
    },
  };
  return harness;
}

export function defaultMeta(numExamples = 10) {
  return { numExamples, loss: 0.5, steps: 1, trainSeconds: 0.01, data: { rows: numExamples, missingFilled: {}, unseenCategories: {} } };
}

/**
 * A binary evaluation report from a coarse histogram (`positives[i]`, `negatives[i]` rows in bin
 * i of `positives.length`), spread onto the 1000 bins every honest node uses (a monotone map, so
 * the pooled AUC is the coarse histogram's). Brier and log-loss sums: those of a score at each
 * bin's centre.
 */
export function evaluation(positives: number[], negatives: number[], loss?: number) {
  const bins = 1000;
  const coarse = positives.length;
  const histogram = { bins, positives: new Array<number>(bins).fill(0), negatives: new Array<number>(bins).fill(0) };
  let brierSum = 0;
  let logLossSum = 0;
  for (let i = 0; i < coarse; i++) {
    const fine = Math.floor(((i + 0.5) * bins) / coarse);
    const p = (fine + 0.5) / bins;
    histogram.positives[fine] += positives[i];
    histogram.negatives[fine] += negatives[i];
    brierSum += positives[i] * (1 - p) ** 2 + negatives[i] * p ** 2;
    logLossSum += -positives[i] * Math.log(p) - negatives[i] * Math.log(1 - p);
  }
  const numExamples = positives.reduce((a, b) => a + b, 0) + negatives.reduce((a, b) => a + b, 0);
  return { numExamples, ...(loss === undefined ? {} : { loss }), stats: { kind: 'binary' as const, histogram, brierSum, logLossSum } };
}

export type Harness = Awaited<ReturnType<typeof inProcessCoordinator>>;

/**
 * One suite per database backend, each on its own in-process coordinator: `run(name, fn)` is a
 * test that gets the harness (and skips when the backend is not reachable).
 */
export function describeOnEachBackend(title: string, body: (run: (name: string, fn: (h: Harness) => Promise<void>) => void) => void, timeoutMs?: number) {
  for (const backendName of BACKEND_NAMES) {
    describe(`${title} on ${backendName}`, () => {
      let h: Harness | undefined;
      beforeAll(async () => {
        const backend = await backendOrSkip(backendName);
        if (backend) h = await inProcessCoordinator(backend);
      });
      afterAll(async () => {
        await h?.close();
      });
      body((name, fn) =>
        it(name, async (ctx) => {
          if (!h) return ctx.skip();
          await fn(h);
        }, timeoutMs),
      );
    });
  }
}
