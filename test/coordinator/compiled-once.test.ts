import { PGlite } from '@electric-sql/pglite';
import { Kysely, PGliteDialect, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compiledOnce, sqlOnce } from '../../coordinator/db/compiled-once.ts';
import type { Db } from '../../coordinator/db/database.ts';

/**
 * coordinator/db/compiled-once.ts (issue 13): a repository query built and compiled by kysely once,
 * then run as that text with the arguments in place. Against a real PGlite: the same rows as the
 * builder run each time, for every argument value; arguments the builder does not pass through as
 * parameters are refused at the first call, never run with a wrong constant.
 */
describe('queries compiled once', () => {
  let pg: PGlite;
  let db: Db;
  const compiled: string[] = [];

  beforeAll(async () => {
    pg = new PGlite();
    await pg.exec(`create table rounds (study_id text, round int, phase text, participants text[], primary key (study_id, round));
      insert into rounds values ('s1', 1, 'completed', '{a,b}'), ('s1', 2, 'fit', '{a}'), ('s1', 3, 'evaluate', '{b}'), ('s2', 1, 'fit', '{c}'), ('it''s', 1, 'fit', '{}');`);
    // A Kysely over the coordinator's schema type; this table has the columns these queries use.
    db = new Kysely({ dialect: new PGliteDialect({ pglite: pg }), log: (e) => void compiled.push(e.query.sql) }) as unknown as Db;
  });
  afterAll(async () => {
    await db.destroy();
  });

  const build = (d: Db, studyId: string, round: number) =>
    d.selectFrom('rounds').select(['round', 'phase', 'participants']).where('study_id', '=', studyId).where('round', '>=', round).where('phase', 'in', ['fit', 'evaluate']).orderBy('round');

  it('answers as the builder does, for every argument, with the text and constants compiled once', async () => {
    const query = compiledOnce((d, a: { studyId: string; round: number }) => build(d, a.studyId, a.round));
    for (const [studyId, round] of [['s1', 1], ['s1', 3], ['s2', 1], ['s2', 2], ["it's", 0], ['nobody', 1], ['s1', -5]] as const) {
      expect(await query(db, { studyId, round }), `${studyId} ${round}`).toEqual(await build(db, studyId, round).execute());
    }
    // The same text every time, with the builder's own constants ('fit', 'evaluate') as parameters.
    expect(new Set(compiled).size).toBe(1);
  });

  it('keeps one compiled text per shape', async () => {
    const query = compiledOnce((d, a: { studyId: string }) => d.selectFrom('rounds').select('round').where('study_id', '=', a.studyId));
    const locking = compiledOnce((d, a: { studyId: string }) => d.selectFrom('rounds').select('round').where('study_id', '=', a.studyId).forUpdate());
    expect((await query(db, { studyId: 's1' }, 'plain')).length).toBe(3);
    expect((await locking(db, { studyId: 's2' }, 'locking')).length).toBe(1);
    const both = compiledOnce((d, a: { studyId: string; lock: string }) => {
      const q = d.selectFrom('rounds').select('round').where('study_id', '=', a.studyId).where(sql<boolean>`${a.lock}::text is not null`);
      return q;
    });
    expect(await both(db, { studyId: 's1', lock: 'x' }, 'a')).toEqual(await both(db, { studyId: 's1', lock: 'y' }, 'b'));
  });

  it('runs inside a transaction on its connection', async () => {
    const query = compiledOnce((d, a: { studyId: string; round: number }) => d.selectFrom('rounds').select('phase').where('study_id', '=', a.studyId).where('round', '=', a.round).forUpdate());
    const phase = await db.transaction().execute(async (tx) => {
      await tx.updateTable('rounds').set({ phase: 'evaluate' }).where('study_id', '=', 's2').where('round', '=', 1).execute();
      return (await query(tx as unknown as Db, { studyId: 's2', round: 1 }))[0]?.phase;
    });
    expect(phase).toBe('evaluate');
  });

  it('a Kysely with plugins gets the builder every time (a plugin may rewrite the query)', async () => {
    const seen: string[] = [];
    const withLog = db.withPlugin({ transformQuery: (args) => (seen.push(args.node.kind), args.node), transformResult: async (args) => args.result });
    const query = compiledOnce((d, a: { studyId: string }) => d.selectFrom('rounds').select('round').where('study_id', '=', a.studyId));
    expect((await query(withLog, { studyId: 's1' })).length).toBe(3);
    expect((await query(withLog, { studyId: 's2' })).length).toBe(1);
    expect(seen).toEqual(['SelectQueryNode', 'SelectQueryNode']);
  });

  it('refuses an argument computed with, written into the text, concatenated or left out: such a text would not fit every value', async () => {
    const computed = compiledOnce((d, a: { studyId: string; round: number }) => build(d, a.studyId, a.round - 1));
    await expect(computed(db, { studyId: 's1', round: 2 })).rejects.toThrow(/computed from an argument|did not reach the parameters/);
    const inText = compiledOnce((d, a: { studyId: string }) => d.selectFrom('rounds').select('round').where(sql.ref('study_id'), '=', sql.lit(a.studyId)));
    await expect(inText(db, { studyId: 's1' })).rejects.toThrow(/written into the SQL text/);
    const concatenated = compiledOnce((d, a: { studyId: string }) => d.selectFrom('rounds').select('round').where('study_id', 'like', `${a.studyId}%`));
    await expect(concatenated(db, { studyId: 's' })).rejects.toThrow(/computed from an argument/);
    const leftOut = compiledOnce((d, _a: { studyId: string; round: number }) => d.selectFrom('rounds').select('round').where('study_id', '=', _a.studyId));
    await expect(leftOut(db, { studyId: 's1', round: 1 })).rejects.toThrow(/round did not reach the parameters/);
  });
  it('sqlOnce: the text and parameters kysely\'s sql compiles to, joined once per call site, the same rows; SQL values refused', async () => {
    const run = (studyId: string, phases: string[]) => sqlOnce<{ round: number; phase: string }>`select round, phase from rounds where study_id = ${studyId} and phase = any(${phases}::text[]) order by round`;
    const reference = (studyId: string, phases: string[]) => sql<{ round: number; phase: string }>`select round, phase from rounds where study_id = ${studyId} and phase = any(${phases}::text[]) order by round`;
    compiled.length = 0;
    for (const [studyId, phases] of [['s1', ['fit', 'evaluate']], ['s1', ['completed']], ["it's", ['fit']], ['nobody', []]] as const) {
      expect((await run(studyId, [...phases]).execute(db)).rows).toEqual((await reference(studyId, [...phases]).execute(db)).rows);
    }
    const texts = [...new Set(compiled)];
    expect(texts).toHaveLength(1);
    expect(texts[0]).toBe(reference('s1', []).compile(db).sql);
    const written = sqlOnce`update rounds set phase = ${'fit'} where study_id = ${'s2'} and round = ${1}`;
    expect(Number((await written.execute(db)).numAffectedRows)).toBe(1);
    await expect(sqlOnce`select round from rounds where ${sql.ref('study_id')} = ${'s1'}`.execute(db)).rejects.toThrow(/a value is SQL/);
  });
});
