import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inferFeatureSpec, readCsvTable, writeCsvTable } from '../../models/index.ts';
import { StudyStatus, type StudyConfigInput } from '../../protocols/messages.ts';
import { decodeServerState } from '../../protocols/strategies/server-state.ts';
import { decodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import { openDatabase } from '../../coordinator/db/database.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { runFedmark, type RunningProcess } from '../helpers/processes.ts';

const CHURN = fileURLToPath(new URL('../../data/mlc_churn.csv', import.meta.url));
const VALUE = fileURLToPath(new URL('../../data/customer_value.csv', import.meta.url));
const ADMIN = 'model-kinds-admin-token-0123456789';

/** A port nobody listens on now, so the coordinator comes back on the same one after a kill. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

interface Scenario {
  kind: 'binary' | 'regression';
  data: string;
  /** Three regions of different sizes: the largest trains longest, so the kill lands mid-round. */
  regionColumn: string;
  regions: string[];
  study: (spec: ReturnType<typeof inferFeatureSpec>) => Partial<StudyConfigInput>;
  target: string;
}

const SCENARIOS: Scenario[] = [
  {
    kind: 'binary',
    data: CHURN,
    regionColumn: 'area_code',
    regions: ['area_code_408', 'area_code_415', 'area_code_510'],
    target: 'churn',
    study: () => ({ model: { kind: 'mlp', hidden: [16] }, strategy: { name: 'fedadam', serverLearningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 } }),
  },
  {
    kind: 'regression',
    data: VALUE,
    regionColumn: 'region',
    regions: ['eu-west', 'us-east', 'cn-east'],
    target: 'spend_12m',
    study: () => ({ task: { kind: 'regression', loss: 'tweedie' }, model: { kind: 'mlp', hidden: [16] }, strategy: { name: 'fedyogi', serverLearningRate: 0.03, beta1: 0.9, beta2: 0.99, tau: 1e-3 } }),
  },
];

/**
 * Each model kind between real processes, on PGlite and PostgreSQL: a coordinator and three node
 * processes run 3 rounds with a stateful server optimizer (FedAdam's and FedYogi's moments);
 * the coordinator is SIGKILLed in the middle of round 2 and restarted on the same
 * database, and the server state must come through exactly: each round starts from the state the
 * one before handed on (byte for byte), and every published model is the optimizer's step from
 * the stored state.
 */
for (const backendName of BACKEND_NAMES) {
  for (const scenario of SCENARIOS) {
    describe(`${scenario.kind} study between real processes on ${backendName}, coordinator killed mid-round`, () => {
      const dir = mkdtempSync(join(tmpdir(), `fedmark-kinds-${scenario.kind}-`));
      const processes: RunningProcess[] = [];
      let database: Awaited<ReturnType<NonNullable<Awaited<ReturnType<typeof backendOrSkip>>>['create']>> | undefined;
      let status: StudyStatus | undefined;
      let skipped = false;
      let killedMidRound = false;
      let resumedRound: unknown;
      let config: StudyConfigInput | undefined;
      let rounds: Array<{ round: number; server_state: Uint8Array | null; next_server_state: Uint8Array | null }> = [];
      let models: WeightSet[] = [];

      beforeAll(async () => {
        const backend = await backendOrSkip(backendName);
        if (!backend || !existsSync(scenario.data)) {
          skipped = true;
          return;
        }
        database = await backend.create();
        const port = await freePort();
        const url = `http://127.0.0.1:${port}`;
        const coordinatorArgs = ['coordinator', '--port', String(port), '--data-dir', database.dataDir ?? join(dir, 'unused')];
        const coordinatorEnv = { FEDMARK_ADMIN_TOKEN: ADMIN, FEDMARK_KEY_DIR: join(dir, 'coordinator-keys'), DATABASE_URL: database.databaseUrl ?? '' };
        let coordinator = runFedmark(coordinatorArgs, coordinatorEnv);
        processes.push(coordinator);
        await coordinator.waitForLog((l) => l.msg === 'coordinator listening');
        const api = async (path: string, init: RequestInit = {}) => {
          const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json', ...init.headers } });
          if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
          return res;
        };

        const table = readCsvTable({ path: scenario.data });
        const exclude = scenario.kind === 'regression' ? ['customer_id', 'region', 'country'] : ['area_code', 'state'];
        const spec = inferFeatureSpec(table, { target: scenario.target, exclude, ...(scenario.kind === 'regression' ? { task: 'regression' as const } : {}) });
        config = { name: `kinds-${scenario.kind}`, features: spec, training: { localEpochs: 1, learningRate: 0.01 }, rounds: 3, minNodesPerRound: 3, minNodesToStart: 3, roundDeadlineSeconds: 120, ...scenario.study(spec) } as StudyConfigInput;
        const study = await (await api('/v1/studies', { method: 'POST', body: JSON.stringify(config) })).json();
        const column = table.header.indexOf(scenario.regionColumn);
        const nodes: RunningProcess[] = [];
        for (const region of scenario.regions) {
          const nodeDir = join(dir, region);
          mkdirSync(nodeDir, { recursive: true });
          writeCsvTable(join(nodeDir, 'data.csv'), table.header, table.rows.filter((r) => r[column] === region));
          const { token } = await (await api('/v1/enrollment-tokens', { method: 'POST', body: JSON.stringify({ studyId: study.id, nodeName: region, region }) })).json();
          const node = runFedmark(['node', '--coordinator', url, '--token', token, '--data', join(nodeDir, 'data.csv'), '--state-dir', join(nodeDir, 'state'), '--backend', 'wasm']);
          nodes.push(node);
          processes.push(node);
        }

        // Kill the coordinator as soon as it has accepted the first update of round 2.
        await coordinator.waitForLog((l) => l.msg === 'update accepted' && l.round === 2, 120_000);
        coordinator.child.kill('SIGKILL');
        await coordinator.exited;
        killedMidRound = !coordinator.logs.some((l) => l.msg === 'round aggregated' && l.round === 2);
        coordinator = runFedmark(coordinatorArgs, coordinatorEnv);
        processes.push(coordinator);
        resumedRound = (await coordinator.waitForLog((l) => l.msg === 'resumed open round', 60_000)).round;
        await coordinator.waitForLog((l) => l.msg === 'coordinator listening', 60_000);

        for (;;) {
          status = StudyStatus.parse(await (await api(`/v1/studies/${study.id}`)).json());
          if (status.state === 'completed') break;
          await new Promise((r) => setTimeout(r, 300));
        }
        await Promise.all(processes.map((p) => p.stop()));
        // Read what the coordinator stored, with nothing else connected (PGlite is single-user).
        const opened = await openDatabase({ databaseUrl: database.databaseUrl, dataDir: database.dataDir });
        try {
          rounds = await opened.db.selectFrom('rounds').select(['round', 'server_state', 'next_server_state']).where('study_id', '=', study.id).orderBy('round').execute();
          const rows = await opened.db.selectFrom('models').select(['version', 'weights']).where('study_id', '=', study.id).orderBy('version').execute();
          models = rows.map((r) => decodeWeights(new Uint8Array(r.weights)));
        } finally {
          await opened.db.destroy();
        }
      }, 420_000);

      afterAll(async () => {
        await Promise.all(processes.map((p) => p.stop()));
        await database?.drop();
        rmSync(dir, { recursive: true, force: true });
      });

      it('was killed in the middle of round 2 and resumed that round after the restart', (ctx) => {
        if (skipped) return ctx.skip();
        expect(killedMidRound).toBe(true);
        expect(resumedRound).toBe(2);
      });

      it('runs 3 rounds with all three nodes, and the model beats its baseline', (ctx) => {
        if (skipped) return ctx.skip();
        expect(status!.rounds.map((r) => r.phase)).toEqual(['completed', 'completed', 'completed']);
        for (const r of status!.rounds) expect(r.updatesReceived).toBe(3);
        const last = status!.rounds[2];
        if (scenario.kind === 'binary') {
          expect(last.validationAuc).toBeGreaterThan(0.7);
        } else {
          const metrics = last.validationMetrics as Record<string, number>;
          expect(metrics.r2).toBeGreaterThan(0);
          expect(metrics.rmse).toBeLessThan(metrics.baselineRmse);
          expect(last.validationAuc).toBeNull();
        }
      });

      it('each round starts from the server state the one before handed on, byte for byte', (ctx) => {
        if (skipped) return ctx.skip();
        expect(rounds).toHaveLength(3);
        for (const r of rounds) {
          expect(r.server_state).not.toBeNull();
          expect(r.next_server_state).not.toBeNull();
        }
        for (let i = 1; i < rounds.length; i++) expect(Buffer.from(rounds[i].server_state!).equals(Buffer.from(rounds[i - 1].next_server_state!))).toBe(true);
      });

      it("every published model is the server optimizer's step from the stored state", (ctx) => {
        if (skipped) return ctx.skip();
        const strategy = config!.strategy as { name: 'fedadam' | 'fedyogi'; serverLearningRate: number; beta1?: number; beta2?: number; tau?: number };
        for (let r = 1; r <= 3; r++) {
          const before = decodeServerState(new Uint8Array(rounds[r - 1].server_state!));
          const after = decodeServerState(new Uint8Array(rounds[r - 1].next_server_state!));
          const [w0, w1] = [models[r - 1], models[r]];
          for (let t = 0; t < w0.length; t++) {
            const name = w0[t].name;
            const at = (set: WeightSet | undefined) => set!.find((x) => x.name === name)!.values;
            for (let i = 0; i < w0[t].values.length; i++) {
              const step = w1[t].values[i] - w0[t].values[i];
              let expected: number;
              const { beta1, beta2, tau, serverLearningRate: eta } = strategy as Required<typeof strategy>;
              const [m0, m1, v0, v1] = [at(before.tensors.m)[i], at(after.tensors.m)[i], at(before.tensors.v)[i], at(after.tensors.v)[i]];
              const delta = (m1 - beta1 * m0) / (1 - beta1);
              // v moved by exactly the delta that m moved by: the state was carried, not reset
              // (a restart that lost it would start again from m = 0, v = tau^2).
              const d2 = delta * delta;
              const v1Expected = strategy.name === 'fedadam' ? beta2 * v0 + (1 - beta2) * d2 : v0 - (1 - beta2) * d2 * Math.sign(v0 - d2);
              expect(Math.abs(v1 - v1Expected), `round ${r} ${name}[${i}]: m ${m0} -> ${m1}, v ${v0} -> ${v1}`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(v1)));
              expected = (eta * m1) / (Math.sqrt(v1) + tau);
              // The model is float32: the step is exact to float32 rounding of the weights.
              expect(Math.abs(step - expected)).toBeLessThanOrEqual(2e-7 * Math.max(1, Math.abs(w1[t].values[i])) + 1e-9);
            }
          }
        }
      });
    });
  }
}
