import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit, appendAudits, readAuditLog } from '../../coordinator/audit/audit-log.ts';
import { openDatabase, type Db } from '../../coordinator/db/database.ts';
import { countAwaitedEvaluations, countAwaitedUpdates } from '../../coordinator/rounds/round-repository.ts';
import { entryHash, GENESIS_HASH } from '../../protocols/audit/audit-chain.ts';
import { backendOrSkip } from '../helpers/databases.ts';

/**
 * Issue 13's query cuts, on PostgreSQL (the same SQL runs on PGlite): a transition's audit entries
 * appended in one insert stay chained one to the next, and the "all in" counts of a round's
 * phases (one query each) wait exactly for the nodes that can still send.
 */
describe('round query cuts (issue 13)', () => {
  let db: Db | undefined;
  let drop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    const backend = await backendOrSkip('postgres');
    if (!backend) return;
    const created = await backend.create();
    drop = created.drop;
    db = (await openDatabase({ databaseUrl: created.databaseUrl })).db;
    await db.insertInto('studies').values({ id: 's1', name: 's1', state: 'running', config: '{}', current_round: 1 } as never).execute();
    for (const [id, state] of [['a', 'ready'], ['b', 'ready'], ['c', 'data-error'], ['d', 'ready']] as const) {
      await db.insertInto('nodes').values({ id, study_id: 's1', name: id, region: 'r', api_key_hash: `h-${id}`, state, state_message: null, data_report: null, last_seen_at: new Date(), public_key: 'k', key_fingerprint: `f-${id}`, revoked_at: null, jurisdiction: null, withdrawn_at: null } as never).execute();
    }
  });
  afterAll(async () => {
    await db?.destroy();
    await drop?.();
  });

  it('a batch of audit entries is chained entry to entry, after the head, and moves the head to its last', async (ctx) => {
    if (!db) return ctx.skip();
    const first = await appendAudit(db, { actor: 't', kind: 'one' });
    const batch = await appendAudits(db, [{ actor: 't', kind: 'two' }, { actor: 't', kind: 'three', data: { n: 3 } }, { actor: 't', kind: 'four' }]);
    const after = await appendAudit(db, { actor: 't', kind: 'five' });
    const { entries } = await readAuditLog(db);
    expect(entries.map((e) => e.kind)).toEqual(['one', 'two', 'three', 'four', 'five']);
    expect(entries[0].prevHash).toBe(GENESIS_HASH);
    for (let i = 0; i < entries.length; i++) {
      expect(entries[i].seq).toBe(first.seq + i);
      expect(entryHash(entries[i])).toBe(entries[i].hash);
      if (i > 0) expect(entries[i].prevHash).toBe(entries[i - 1].hash);
    }
    expect(batch.map((e) => e.seq)).toEqual([2, 3, 4]);
    expect(after.prevHash).toBe(batch[2].hash);
  });

  it('the fit phase waits for participants without an update that can still train (and unknown ids); evaluation for updaters that can still evaluate', async (ctx) => {
    if (!db) return ctx.skip();
    const ready = new Set(['ready']);
    // a, b, d ready; c cannot train; x has no node row.
    expect(await countAwaitedUpdates(db, 's1', 1, ['a', 'b', 'c'], ready)).toBe(2);
    expect(await countAwaitedUpdates(db, 's1', 1, ['c'], ready)).toBe(0);
    expect(await countAwaitedUpdates(db, 's1', 1, ['c', 'x'], ready)).toBe(1);
    expect(await countAwaitedUpdates(db, 's1', 1, [], ready)).toBe(0);
    const update = (node: string) => ({ study_id: 's1', round: 1, node_id: node, sha256: node, bytes: 1, num_examples: 1, loss: null, meta: '{}', accepted_at: new Date() });
    await db.insertInto('rounds').values({ study_id: 's1', round: 1, phase: 'fit', participants: JSON.stringify(['a', 'b', 'c']), fit_deadline: new Date(), evaluation_deadline: null, accumulator: null, num_examples: 0, mean_loss: null, validation_auc: null, validation_loss: null, failure_reason: null, closed_at: null, clip_norm: null, mechanism: null, server_state: null, next_server_state: null, instructions: null, validation_metrics: null } as never).execute();
    await db.insertInto('updates').values([update('a'), update('d')] as never).execute();
    expect(await countAwaitedUpdates(db, 's1', 1, ['a', 'b', 'c'], ready)).toBe(1);
    // Evaluation: a and d trained; none evaluated yet.
    expect(await countAwaitedEvaluations(db, 's1', 1, ready)).toBe(2);
    await db.insertInto('evaluations').values({ study_id: 's1', round: 1, node_id: 'a', num_examples: 1, loss: null, histogram: null, stats: '{}' } as never).execute();
    expect(await countAwaitedEvaluations(db, 's1', 1, ready)).toBe(1);
    await db.updateTable('nodes').set({ state: 'withdrawn' }).where('id', '=', 'd').execute();
    expect(await countAwaitedEvaluations(db, 's1', 1, ready)).toBe(0);
  });
});
