import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import { openDatabase } from '../../coordinator/db/database.ts';
import { BACKEND_NAMES, backendOrSkip, type DatabaseBackend } from '../helpers/databases.ts';
import { inProcessCoordinator, tinyStudy } from './harness.ts';

const central = { noiseMultiplier: 2, clipping: { kind: 'fixed' as const, norm: 1 }, nodeSamplingRate: 1 };

for (const backendName of BACKEND_NAMES) {
  describe(`the coordinator's privacy ledger is append-only on ${backendName}`, () => {
    let h: Awaited<ReturnType<typeof inProcessCoordinator>> | undefined;
    let database: Awaited<ReturnType<DatabaseBackend['create']>> | undefined;
    let studyId: string;

    beforeAll(async () => {
      const backend = await backendOrSkip(backendName);
      if (!backend) return;
      // PostgreSQL: the coordinator runs as a LOGIN member of fedmark_app, as in production; the
      // round's charge below is inserted by that role.
      h = await inProcessCoordinator({ ...backend, create: async () => (database = await backend.create({ appRole: true })) });
      studyId = await h.createStudy(tinyStudy({ rounds: 2, privacy: { accountant: 'rdp', delta: 1e-5, central } }));
      await h.enroll(studyId, 'a');
      await h.enroll(studyId, 'b');
      await h.until(async () => ((await h!.built.db.selectFrom('privacy_ledger').select('round').where('study_id', '=', studyId).execute()).length > 0 ? true : undefined));
    });
    afterAll(async () => h?.close());

    it('the triggers refuse UPDATE, DELETE and TRUNCATE of ledger rows, even for the schema owner', async (ctx) => {
      if (!h) return ctx.skip();
      const owner = database?.migrationDatabaseUrl ? (await openDatabase({ databaseUrl: database.migrationDatabaseUrl, mode: 'read-only' })).db : h.built.db;
      try {
        const tx = async (statement: ReturnType<typeof sql>) =>
          owner.transaction().execute(async (t) => {
            await sql`set transaction read write`.execute(t);
            await statement.execute(t);
          });
        const before = await owner.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).execute();
        expect(before).toHaveLength(1);
        await expect(tx(sql`update privacy_ledger set epsilon_total = 0 where study_id = ${studyId}`)).rejects.toThrow(/privacy ledger is append-only: UPDATE/);
        await expect(tx(sql`delete from privacy_ledger where study_id = ${studyId}`)).rejects.toThrow(/privacy ledger is append-only: DELETE/);
        await expect(tx(sql`truncate privacy_ledger`)).rejects.toThrow(/privacy ledger is append-only: TRUNCATE/);
        expect(await owner.selectFrom('privacy_ledger').selectAll().where('study_id', '=', studyId).execute()).toEqual(before);
      } finally {
        if (owner !== h.built.db) await owner.destroy();
      }
    });

    it('PostgreSQL: the app role may read and append ledger rows, nothing else', async (ctx) => {
      if (!h || backendName !== 'postgres') return ctx.skip();
      const app = new pg.Client({ connectionString: database!.databaseUrl });
      await app.connect();
      try {
        const privileges = await app.query(`select p as privilege from unnest(array['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) as p where has_table_privilege('privacy_ledger', p)`);
        expect(privileges.rows.map((r) => r.privilege)).toEqual(['SELECT', 'INSERT']);
        for (const [statement, error] of [
          [`update privacy_ledger set epsilon_total = 0`, /permission denied for table privacy_ledger/],
          [`delete from privacy_ledger`, /permission denied for table privacy_ledger/],
          [`truncate privacy_ledger`, /permission denied for table privacy_ledger/],
          [`drop trigger privacy_ledger_no_update on privacy_ledger`, /must be owner of (table|relation) privacy_ledger/],
          [`alter table privacy_ledger disable trigger all`, /must be owner of table privacy_ledger/],
        ] as const) {
          await expect(app.query(statement), statement).rejects.toThrow(error);
        }
        const { checkAppRole } = await import('../../coordinator/db/database.ts');
        expect(await checkAppRole(h.built.db)).toEqual([]);
      } finally {
        await app.end();
      }
    });
  });
}

describe('nothing in the coordinator changes or removes ledger rows', () => {
  it('no UPDATE, DELETE or TRUNCATE of privacy_ledger in coordinator sources (migrations aside)', () => {
    const root = fileURLToPath(new URL('../../coordinator/', import.meta.url));
    const files = (readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.includes('migrations'));
    for (const f of files) {
      const text = readFileSync(join(root, f), 'utf8');
      expect(text, f).not.toMatch(/(updateTable|deleteFrom)\(\s*['"]privacy_ledger['"]/);
      expect(text, f).not.toMatch(/(update|delete\s+from|truncate)\s+privacy_ledger/i);
    }
  });
});
