import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { encodeWeights } from '../../protocols/weights-codec.ts';
import type { WeightSet } from '../../protocols/tensors.ts';
import type { UpdateMeta } from '../../protocols/messages.ts';
import { strategyFor } from '../../coordinator/main.ts';
import { AppError } from '../../coordinator/errors.ts';
import { acceptEvaluation, acceptUpdate, acceptUpdateWithEvaluation } from '../../coordinator/rounds/intake.ts';
import { foldCacheOf } from '../../coordinator/rounds/fold-cache.ts';
import type { RoundDeps } from '../../coordinator/rounds/round-state.ts';
import type { AuthenticatedNode } from '../../coordinator/nodes/node-service.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';
import { defaultMeta, evaluation, inProcessCoordinator, tinyStudy } from './harness.ts';

/**
 * Issue 13: an update costs three statements besides its audit entry (the round row locked, one
 * read of everything it is checked against, one write), an evaluation three (lock, read, insert);
 * a retry two, and writes nothing. And what the merged read must keep: it follows the lock, so on
 * PostgreSQL concurrent arrivals still see each other (a retry racing its original is a replay,
 * not an error; exactly one of the last arrivals is "all in").
 */

/** Records every statement's operation tree (raw SQL included), so a test can count and read them. */
class StatementLog implements KyselyPlugin {
  statements: string[] = [];
  /** A statement whose tree matches this fails as a database would (a test of what rolls back). */
  failOn: RegExp | undefined;
  /** What that statement throws (default: a database's connection error). */
  failWith: () => Error = () => Object.assign(new Error('connection terminated (injected)'), { code: '08006', severity: 'FATAL' });
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    const text = JSON.stringify(args.node);
    this.statements.push(text);
    if (this.failOn?.test(text)) throw this.failWith();
    return args.node;
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result;
  }
  /** Statements since `from`, without the audit chain's (appendAudit's, another module's cost). */
  since(from: number): string[] {
    return this.statements.slice(from).filter((s) => !/audit_(head|log)/.test(s));
  }
}

function weightsOf(seed: number): WeightSet {
  const v = (i: number) => Math.fround(Math.sin(seed * 12.9898 + i * 78.233) * 0.3);
  return [
    { name: 'dense_0/kernel', shape: [7, 1], values: Float32Array.from({ length: 7 }, (_, i) => v(i)) },
    { name: 'dense_0/bias', shape: [1], values: new Float32Array([v(7)]) },
  ];
}

for (const backendName of BACKEND_NAMES) {
  describe(`update and evaluation intake in three statements (issue 13) on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (backend) h = await inProcessCoordinator(backend, undefined, { deadlineSweepSeconds: 0 });
    });
    afterAll(async () => {
      await h?.close();
    });
    const run = (name: string, fn: (hh: NonNullable<typeof h>) => Promise<void>) =>
      it(name, async (ctx) => {
        if (!h) return ctx.skip();
        await fn(h);
      }, 60_000);

    /** A study with round 1 in its fit phase, `n` participants, and intake deps whose statements are logged. */
    async function openRound(hh: NonNullable<typeof h>, n: number) {
      const studyId = await hh.createStudy(tinyStudy({ rounds: 1, minNodesPerRound: n, minNodesToStart: n, roundDeadlineSeconds: 600 }));
      const nodes: AuthenticatedNode[] = [];
      for (let i = 0; i < n; i++) nodes.push(await hh.built.nodes.authenticate((await hh.enroll(studyId, `n${i}`)).apiKey));
      await hh.until(async () => ((await hh.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).executeTakeFirst())?.phase === 'fit' ? true : undefined));
      const log = new StatementLog();
      const deps: RoundDeps = { db: hh.built.db.withPlugin(log), studies: hh.built.studies, strategyFor, keyring: hh.built.keyring, now: () => new Date() };
      return { studyId, nodes, log, deps };
    }
    const meta = (k: number) => defaultMeta(10 + k) as UpdateMeta;

    run('an update costs three statements besides the audit (a retry two); an evaluation three', async (hh) => {
      const { studyId, nodes, log, deps } = await openRound(hh, 3);
      const bodies = nodes.map((_, k) => encodeWeights(weightsOf(k + 1)));
      // The first update of a round (re)builds the fold: it also reads the round's state and counts the accepted updates.
      expect((await acceptUpdate(deps, nodes[0], studyId, 1, meta(0), bodies[0])).replay).toBe(false);
      let from = log.statements.length;
      const second = await acceptUpdate(deps, nodes[1], studyId, 1, meta(1), bodies[1]);
      const statements = log.since(from);
      expect(statements).toHaveLength(3);
      expect(statements[0]).toContain('"ForUpdate"'); // the round row, locked first
      expect(statements[0]).not.toContain('"accumulator"'); // not the state blobs (FedAvg without central DP)
      expect(second).toMatchObject({ replay: false, allIn: false });
      // A retry: the lock and the read, nothing written.
      from = log.statements.length;
      expect((await acceptUpdate(deps, nodes[1], studyId, 1, meta(1), bodies[1])).replay).toBe(true);
      expect(log.since(from)).toHaveLength(2);
      expect(await hh.built.db.selectFrom('round_kept_updates').select('seq').where('study_id', '=', studyId).execute()).toHaveLength(2);
      // The last participant: all in, from the read before the write.
      expect(await acceptUpdate(deps, nodes[2], studyId, 1, meta(2), bodies[2])).toMatchObject({ replay: false, allIn: true });
      const seen = await hh.built.db.selectFrom('nodes').select('last_seen_at').where('id', '=', nodes[2].id).executeTakeFirstOrThrow();
      expect(seen.last_seen_at).not.toBeNull(); // markNodeSeen, now inside the write
      await hh.built.rounds.advanceRound(studyId, 1);
      const results = [];
      for (const [k, node] of nodes.entries()) {
        from = log.statements.length;
        results.push(await acceptEvaluation(deps, node, studyId, 1, evaluation([1, 2], [3, 0 + k])));
        expect(log.since(from)).toHaveLength(3);
      }
      expect(results).toEqual([true, true, 'all-in']);
      from = log.statements.length;
      expect(await acceptEvaluation(deps, nodes[0], studyId, 1, evaluation([1, 2], [3, 0]))).toBe(false); // a retry
      expect(log.since(from)).toHaveLength(2);
    });

    /** Round 1 evaluating and round 2 in its fit phase ('with-next-fit'), `n` participants in both. */
    async function atRoundTwo(hh: NonNullable<typeof h>, n: number) {
      const studyId = await hh.createStudy(tinyStudy({ rounds: 2, minNodesPerRound: n, minNodesToStart: n, roundDeadlineSeconds: 600, evaluationDeadlineSeconds: 600, evaluationSchedule: 'with-next-fit' }));
      const nodes: AuthenticatedNode[] = [];
      for (let i = 0; i < n; i++) nodes.push(await hh.built.nodes.authenticate((await hh.enroll(studyId, `n${i}`)).apiKey));
      const phase = (round: number) => hh.built.db.selectFrom('rounds').select('phase').where('study_id', '=', studyId).where('round', '=', round).executeTakeFirst().then((r) => r?.phase);
      await hh.until(async () => ((await phase(1)) === 'fit' ? true : undefined));
      const log = new StatementLog();
      const deps: RoundDeps = { db: hh.built.db.withPlugin(log), studies: hh.built.studies, strategyFor, keyring: hh.built.keyring, now: () => new Date() };
      for (const [k, node] of nodes.entries()) await acceptUpdate(deps, node, studyId, 1, meta(k), encodeWeights(weightsOf(k + 1)));
      await hh.built.rounds.advanceRound(studyId, 1);
      await hh.until(async () => ((await phase(2)) === 'fit' ? true : undefined));
      expect(await phase(1)).toBe('evaluate');
      const audit = (kind: string) => hh.built.db.selectFrom('audit_log').select(['seq', 'data']).where('study_id', '=', studyId).where('kind', '=', kind).orderBy('seq').execute();
      const stored = (table: 'evaluations' | 'updates', round: number) => hh.built.db.selectFrom(table).select('node_id').where('study_id', '=', studyId).where('round', '=', round).execute().then((rows) => rows.map((r) => r.node_id).sort());
      return { studyId, nodes, log, deps, audit, stored };
    }
    const riding = (k: number) => ({ round: 1, report: evaluation([1, 2], [3, k % 3]) });
    const fitOf = (k: number) => ({ round: 2, meta: meta(k), body: encodeWeights(weightsOf(k + 11)) });

    run('an update with its evaluation riding: one transaction, the two parts\' six statements and ONE audit statement (evaluation first)', async (hh) => {
      const { nodes, studyId, log, deps, audit } = await atRoundTwo(hh, 3);
      // The round's first update also (re)builds its fold (two reads more): the second is the one counted.
      expect(await acceptUpdateWithEvaluation(deps, nodes[0], studyId, fitOf(0), riding(0))).toMatchObject({ evaluation: { ok: true }, update: { ok: { replay: false, allIn: false } } });
      const from = log.statements.length;
      const judged = await acceptUpdateWithEvaluation(deps, nodes[1], studyId, fitOf(1), riding(1));
      expect(judged).toMatchObject({ evaluation: { ok: true }, update: { ok: { replay: false, allIn: false } } });
      const all = log.statements.slice(from);
      // lock 1, read, insert; lock 2, read, write; then both audit entries in one statement.
      expect(log.since(from)).toHaveLength(6);
      expect(all.filter((x) => /audit_(head|log)/.test(x))).toHaveLength(1);
      const [e] = (await audit('evaluation.received')).filter((r) => JSON.parse(r.data).nodeId === nodes[1].id);
      const [u] = (await audit('update.received')).filter((r) => JSON.parse(r.data).nodeId === nodes[1].id && r.seq > e.seq);
      expect(u.seq).toBe(e.seq + 1);
      // The last of both: each part says so on its own.
      expect(await acceptUpdateWithEvaluation(deps, nodes[2], studyId, fitOf(2), riding(2))).toMatchObject({ evaluation: { ok: 'all-in' }, update: { ok: { replay: false, allIn: true } } });
    });

    run('each part judged on its own: a refused update keeps its evaluation, a refused evaluation keeps its update', async (hh) => {
      const { nodes, studyId, deps, audit, stored } = await atRoundTwo(hh, 3);
      const [a, b] = nodes;
      // a's update of round 2 is in already; a second, different one is refused, its evaluation stored all the same.
      expect((await acceptUpdate(deps, a, studyId, 2, meta(0), fitOf(0).body)).replay).toBe(false);
      const judged = await acceptUpdateWithEvaluation(deps, a, studyId, { ...fitOf(0), body: encodeWeights(weightsOf(99)) }, riding(0));
      expect(judged.evaluation).toEqual({ ok: true });
      expect(judged.update).toMatchObject({ refused: { status: 409, code: 'DUPLICATE_UPDATE' } });
      expect(await stored('evaluations', 1)).toEqual([a.id]);
      expect((await audit('evaluation.received')).map((r) => JSON.parse(r.data).nodeId)).toEqual([a.id]);
      // b's evaluation already in with other numbers: refused, its update stored.
      expect(await acceptEvaluation(deps, b, studyId, 1, evaluation([2, 1], [3, 1]))).toBe(true);
      const second = await acceptUpdateWithEvaluation(deps, b, studyId, fitOf(1), riding(1));
      expect(second.evaluation).toMatchObject({ refused: { status: 409, code: 'DUPLICATE_EVALUATION' } });
      expect(second.update).toMatchObject({ ok: { replay: false } });
      expect(await stored('updates', 2)).toEqual([a.id, b.id].sort());
    });

    run('a database error in either part rolls back both (the request fails whole; its retry stores both once)', async (hh) => {
      const { nodes, studyId, log, deps, audit, stored } = await atRoundTwo(hh, 2);
      const [a] = nodes;
      const auditBefore = (await audit('evaluation.received')).length;
      // The update's write fails, after the evaluation's insert ran in the same transaction.
      log.failOn = /insert into round_kept_updates/;
      await expect(acceptUpdateWithEvaluation(deps, a, studyId, fitOf(0), riding(0))).rejects.toThrow(/injected/);
      log.failOn = undefined;
      expect(await stored('evaluations', 1)).toEqual([]);
      expect(await stored('updates', 2)).toEqual([]);
      expect(await audit('evaluation.received')).toHaveLength(auditBefore);
      // The retry: both stored, once.
      expect(await acceptUpdateWithEvaluation(deps, a, studyId, fitOf(0), riding(0))).toMatchObject({ evaluation: { ok: true }, update: { ok: { replay: false } } });
      expect(await stored('evaluations', 1)).toEqual([a.id]);
      expect(await stored('updates', 2)).toEqual([a.id]);
    });

    run('refusals on their face (before any transaction) are judged per part too: the other part is stored', async (hh) => {
      const { nodes, studyId, stored, audit } = await atRoundTwo(hh, 3);
      const [a, b, c] = nodes;
      const db = hh.built.db.withPlugin(new StatementLog()); // an instance of its own, whose transactions are counted
      const transactions = vi.spyOn(db, 'transaction');
      const deps: RoundDeps = { db, studies: hh.built.studies, strategyFor, keyring: hh.built.keyring, now: () => new Date() };
      // An evaluation of the wrong kind: refused before the transaction; the update is stored.
      const wrongKind = { round: 1, report: { ...riding(0).report, stats: { ...riding(0).report.stats, kind: 'regression' } } } as unknown as ReturnType<typeof riding>;
      const first = await acceptUpdateWithEvaluation(deps, a, studyId, fitOf(0), wrongKind);
      expect(first.evaluation).toMatchObject({ refused: { status: 400, code: 'INVALID_EVALUATION' } });
      expect(first.update).toMatchObject({ ok: { replay: false } });
      // Weights that do not decode: refused before the transaction; the evaluation is stored.
      const second = await acceptUpdateWithEvaluation(deps, b, studyId, { ...fitOf(1), body: new Uint8Array([1, 2, 3]) }, riding(1));
      expect(second.update).toMatchObject({ refused: { status: 400, code: 'INVALID_WEIGHTS' } });
      expect(second.evaluation).toEqual({ ok: true });
      // Both refused: nothing stored, nothing audited.
      expect(transactions).toHaveBeenCalledTimes(2);
      // Both refused on their face: no transaction at all (on PGlite it would hold the only connection).
      const both = await acceptUpdateWithEvaluation(deps, c, studyId, { ...fitOf(2), body: new Uint8Array([1, 2, 3]) }, wrongKind);
      expect(both).toMatchObject({ evaluation: { refused: { code: 'INVALID_EVALUATION' } }, update: { refused: { code: 'INVALID_WEIGHTS' } } });
      expect(transactions).toHaveBeenCalledTimes(2);
      expect(await stored('updates', 2)).toEqual([a.id]);
      expect(await stored('evaluations', 1)).toEqual([b.id]);
      expect((await audit('evaluation.received')).map((r) => JSON.parse(r.data).nodeId)).toEqual([b.id]);
    });

    run('an AppError of the server (5xx) in a part is not a refusal: it rolls back both, as a database error does', async (hh) => {
      const { nodes, studyId, log, deps, stored } = await atRoundTwo(hh, 2);
      log.failOn = /insert into round_kept_updates/;
      log.failWith = () => new AppError(503, 'UNAVAILABLE', 'storage unavailable (injected)');
      await expect(acceptUpdateWithEvaluation(deps, nodes[0], studyId, fitOf(0), riding(0))).rejects.toMatchObject({ status: 503 });
      log.failOn = undefined;
      expect(await stored('evaluations', 1)).toEqual([]);
      expect(await stored('updates', 2)).toEqual([]);
    });

    run("a database error at the evaluation's insert rolls back the update's part too", async (hh) => {
      const { nodes, studyId, log, deps, stored } = await atRoundTwo(hh, 2);
      log.failOn = /insert into evaluations/;
      await expect(acceptUpdateWithEvaluation(deps, nodes[0], studyId, fitOf(0), riding(0))).rejects.toThrow(/injected/);
      log.failOn = undefined;
      expect(await stored('evaluations', 1)).toEqual([]);
      expect(await stored('updates', 2)).toEqual([]);
    });

    run("a refused update leaves the round's fold cached (a node resending one cannot make every accept rebuild it); a failed write drops it", async (hh) => {
      const { studyId, nodes, log, deps } = await openRound(hh, 3);
      const key = `${studyId}\u00001`;
      expect((await acceptUpdate(deps, nodes[0], studyId, 1, meta(0), encodeWeights(weightsOf(1)))).replay).toBe(false);
      const fold = foldCacheOf(deps.db).get(key);
      expect(fold?.count).toBe(1);
      // A different update from the same node: 409, the fold untouched and still cached.
      await expect(acceptUpdate(deps, nodes[0], studyId, 1, meta(0), encodeWeights(weightsOf(2)))).rejects.toMatchObject({ status: 409, code: 'DUPLICATE_UPDATE' });
      expect(foldCacheOf(deps.db).get(key)).toBe(fold);
      // A write that fails after the fold took the update: dropped, rebuilt at the next use.
      log.failOn = /insert into round_kept_updates/;
      await expect(acceptUpdate(deps, nodes[1], studyId, 1, meta(1), encodeWeights(weightsOf(3)))).rejects.toThrow(/injected/);
      log.failOn = undefined;
      expect(foldCacheOf(deps.db).get(key)).toBeUndefined();
      expect((await acceptUpdate(deps, nodes[1], studyId, 1, meta(1), encodeWeights(weightsOf(3)))).replay).toBe(false);
      expect(foldCacheOf(deps.db).get(key)?.count).toBe(2);
    });

    run('concurrent arrivals read after the lock: a racing retry is a replay, exactly one last arrival is all in', async (hh) => {
      const { studyId, nodes, deps } = await openRound(hh, 4);
      const bodies = nodes.map((_, k) => encodeWeights(weightsOf(k + 1)));
      // Node 0 three times at once (a client retrying an update still in flight), the others once each.
      const outcomes = await Promise.all([
        ...[0, 0, 0].map((k) => acceptUpdate(deps, nodes[k], studyId, 1, meta(k), bodies[k])),
        ...[1, 2, 3].map((k) => acceptUpdate(deps, nodes[k], studyId, 1, meta(k), bodies[k])),
      ]);
      expect(outcomes.slice(0, 3).filter((o) => o.replay)).toHaveLength(2);
      expect(outcomes.filter((o) => !o.replay && o.allIn)).toHaveLength(1);
      const kept = await hh.built.db.selectFrom('round_kept_updates').select(['seq', 'node_id']).where('study_id', '=', studyId).orderBy('seq').execute();
      expect(kept.map((r) => r.seq)).toEqual([0, 1, 2, 3]);
    });
  });
}
