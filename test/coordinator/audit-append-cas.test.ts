import { afterEach, describe, expect, it } from 'vitest';
import { Kysely, PGliteDialect, sql } from 'kysely';
import { appendAudit, appendAudits, readAuditLog } from '../../coordinator/audit/audit-log.ts';
import { openDatabase, type Db } from '../../coordinator/db/database.ts';
import type { Database } from '../../coordinator/db/schema.ts';
import { entryHash, GENESIS_HASH } from '../../protocols/audit/audit-chain.ts';
import { BACKEND_NAMES, backendOrSkip } from '../helpers/databases.ts';

/**
 * An audit append is one statement in the common case: a compare-and-swap from the head this
 * process remembers per database handle (coordinator/audit/audit-log.ts). Each case below moves
 * the head behind that memory's back (a rolled-back append, concurrent transactions, a second
 * coordinator replica on the same database); without the swap's check (`where seq = ... and
 * hash = ...` in appendAuditEntriesIfHead) each of them breaks the chain or fails on a
 * duplicate seq. Checked once by removing that check: every case but the statement count failed.
 */

/** Two handles on one database, as two coordinator replicas would have (PGlite: two Kysely over one instance, used in turn). */
async function openPair(backendName: 'pglite' | 'postgres', log?: (sql: string) => void) {
  const backend = await backendOrSkip(backendName);
  if (!backend) return undefined;
  const database = await backend.create();
  const onLog = log ? { log: (e: { query: { sql: string } }) => log(e.query.sql) } : {};
  if (database.databaseUrl) {
    const a = (await openDatabase({ databaseUrl: database.databaseUrl, ...onLog })).db;
    const b = (await openDatabase({ databaseUrl: database.databaseUrl })).db;
    return { a, b, close: async () => (await a.destroy(), await b.destroy(), await database.drop()) };
  }
  // Migrated by openDatabase, then reopened with two handles over one PGlite instance.
  await (await openDatabase({ dataDir: database.dataDir })).db.destroy();
  const { PGlite } = await import('@electric-sql/pglite');
  const pglite = new PGlite(database.dataDir!);
  const a = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }), ...(log ? { log: (e) => log(e.query.sql) } : {}) });
  const b = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  return { a, b, close: async () => (await pglite.close(), await database.drop()) };
}

/** Every entry hashes to its hash, links to the one before, seqs run 1..n, and the head row names the last. */
async function expectChainIntact(db: Db, count: number) {
  const { entries } = await readAuditLog(db);
  expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
  let prev = GENESIS_HASH;
  for (const e of entries) {
    expect(entryHash(e)).toBe(e.hash);
    expect(e.prevHash).toBe(prev);
    prev = e.hash;
  }
  const head = await db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirstOrThrow();
  expect(head).toEqual({ seq: count, hash: entries.at(-1)!.hash });
}

class Rollback extends Error {}

/** Each case opens a fresh database (PGlite: initdb and every migration), slow on a loaded machine. */
const TIMEOUT_MS = 180_000;

for (const backendName of BACKEND_NAMES) {
  describe(`audit appends by compare-and-swap on ${backendName}`, () => {
    let close: (() => Promise<unknown>) | undefined;
    afterEach(async () => {
      await close?.();
      close = undefined;
    }, TIMEOUT_MS);

    it('costs one statement per append once the head is known', async (ctx) => {
      const statements: string[] = [];
      const pair = await openPair(backendName, (s) => statements.push(s));
      if (!pair) return ctx.skip();
      close = pair.close;
      await appendAudit(pair.a, { actor: 'test', kind: 'test.first' });
      statements.length = 0;
      await pair.a.transaction().execute((tx) => appendAudits(tx, [{ actor: 'test', kind: 'test.second' }, { actor: 'test', kind: 'test.third' }]));
      await appendAudit(pair.a, { actor: 'test', kind: 'test.fourth' });
      expect(statements.filter((s) => /audit_(head|log)/.test(s))).toHaveLength(2);
      expect(statements.filter((s) => /for update/.test(s))).toHaveLength(0);
      await expectChainIntact(pair.a, 4);
    }, TIMEOUT_MS);

    it('chains to the real head after an append that rolled back', async (ctx) => {
      const pair = await openPair(backendName);
      if (!pair) return ctx.skip();
      close = pair.close;
      await appendAudit(pair.a, { actor: 'test', kind: 'test.kept' });
      await expect(pair.a.transaction().execute(async (tx) => {
        await appendAudit(tx, { actor: 'test', kind: 'test.rolled-back' });
        throw new Rollback();
      })).rejects.toBeInstanceOf(Rollback);
      await appendAudit(pair.a, { actor: 'test', kind: 'test.after' });
      await pair.a.transaction().execute((tx) => appendAudit(tx, { actor: 'test', kind: 'test.after-2' }));
      await expectChainIntact(pair.a, 3);
      const { entries } = await readAuditLog(pair.a);
      expect(entries.map((e) => e.kind)).toEqual(['test.kept', 'test.after', 'test.after-2']);
    }, TIMEOUT_MS);

    it('keeps one chain under many concurrent transactions, some of which roll back', async (ctx) => {
      const pair = await openPair(backendName);
      if (!pair) return ctx.skip();
      close = pair.close;
      await appendAudit(pair.a, { actor: 'test', kind: 'test.start' });
      const outcomes = await Promise.allSettled(Array.from({ length: 24 }, (_, i) =>
        pair.a.transaction().execute(async (tx) => {
          await sql`select 1`.execute(tx);
          await appendAudit(tx, { actor: 'test', kind: 'test.concurrent', data: { i } });
          // A little work after the append, so other transactions queue up on the head row.
          await sql`select pg_sleep(0.002)`.execute(tx);
          if (i % 5 === 2) throw new Rollback();
        }),
      ));
      const failed = outcomes.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason);
      expect(failed.every((r) => r instanceof Rollback)).toBe(true);
      expect(failed).toHaveLength(5);
      await expectChainIntact(pair.a, 1 + 24 - 5);
    }, TIMEOUT_MS);

    it('a second replica appending in between: both chain to the real head', async (ctx) => {
      const pair = await openPair(backendName);
      if (!pair) return ctx.skip();
      close = pair.close;
      await appendAudit(pair.a, { actor: 'replica-a', kind: 'test.a1' });
      await appendAudit(pair.b, { actor: 'replica-b', kind: 'test.b1' });
      await appendAudit(pair.a, { actor: 'replica-a', kind: 'test.a2' });
      await expectChainIntact(pair.a, 3);
      await pair.b.transaction().execute((tx) => appendAudits(tx, [{ actor: 'replica-b', kind: 'test.b2' }, { actor: 'replica-b', kind: 'test.b3' }]));
      await pair.a.transaction().execute((tx) => appendAudit(tx, { actor: 'replica-a', kind: 'test.a3' }));
      await appendAudit(pair.b, { actor: 'replica-b', kind: 'test.b4' });
      await expectChainIntact(pair.b, 7);
    }, TIMEOUT_MS);

    it('replicas appending at the same time (PostgreSQL) keep one chain', async (ctx) => {
      if (backendName !== 'postgres') return ctx.skip();
      const pair = await openPair(backendName);
      if (!pair) return ctx.skip();
      close = pair.close;
      await appendAudit(pair.a, { actor: 'replica-a', kind: 'test.a' });
      await appendAudit(pair.b, { actor: 'replica-b', kind: 'test.b' });
      await Promise.all(Array.from({ length: 20 }, (_, i) => {
        const db = i % 2 === 0 ? pair.a : pair.b;
        return db.transaction().execute(async (tx) => {
          await appendAudit(tx, { actor: i % 2 === 0 ? 'replica-a' : 'replica-b', kind: 'test.concurrent', data: { i } });
          await sql`select pg_sleep(0.002)`.execute(tx);
        });
      }));
      await expectChainIntact(pair.a, 22);
    }, TIMEOUT_MS);
  });
}
