import { type Kysely, sql } from 'kysely';

/**
 * The application's database role. Triggers alone (migration 0005) do not make the audit log
 * append-only against the role that connects: a table's owner can `ALTER TABLE ... DISABLE
 * TRIGGER` or `DROP TRIGGER`, and a superuser can `SET session_replication_role = replica`, and
 * then rewrite history. So the coordinator runs as a login role that is a member of this NOLOGIN
 * group role, which owns nothing and holds only the privileges the app needs: on the audit
 * tables SELECT and INSERT, nothing else. The owner runs migrations (FEDMARK_MIGRATION_DATABASE_URL).
 *
 * Roles are cluster-wide: the role may already exist (another database on the same server, an
 * init script, a concurrent migration), so creating it tolerates each of those.
 */
export const APP_ROLE = 'fedmark_app';

/**
 * Rows here are never changed or removed: the app may only read and append. The privacy ledger
 * joined the audit tables with migration 0016 (its triggers); this grant is re-applied after every
 * migration run, so databases migrated before then get it too.
 */
export const APPEND_ONLY_TABLES = ['audit_log', 'audit_checkpoints', 'privacy_ledger'] as const;

/** Kysely's bookkeeping: the app reads it (to see the schema is current) but never migrates. */
const MIGRATION_TABLES = ['kysely_migration', 'kysely_migration_lock'] as const;

/**
 * Idempotent, and safe when two databases of one cluster migrate at once: the loser of a
 * concurrent CREATE ROLE waits for the winner's commit, then gets duplicate_object or
 * unique_violation, which is what "already exists" means here. Without the right to create roles
 * it skips: the operator (or docker/postgres-init) creates the role beforehand.
 */
export const CREATE_APP_ROLE_SQL = `
do $$
begin
  if not exists (select from pg_roles where rolname = '${APP_ROLE}') then
    if exists (select from pg_roles where rolname = current_user and (rolsuper or rolcreaterole)) then
      begin
        create role ${APP_ROLE} nologin nosuperuser nocreatedb nocreaterole;
      exception when duplicate_object or unique_violation then
        null;
      end;
    else
      raise notice 'role ${APP_ROLE} does not exist and % may not create it: create it (NOLOGIN) and re-run the migrations', current_user;
    end if;
  end if;
end $$`;

/** PGlite is one embedded superuser session: there is no other role to connect as. */
export async function isPglite(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ pglite: boolean }>`select version() like '%PGlite%' as pglite`.execute(db);
  return rows[0]?.pglite === true;
}

/**
 * Sets the app role's privileges to exactly what the coordinator needs, on every table of the
 * schema (so tables added by later migrations are covered: the caller re-runs this after each
 * migration run). Runs as the tables' owner; does nothing when the role is missing or the caller
 * does not own the audit log (GRANT by a non-owner would only warn).
 */
export async function grantAppRole(db: Kysely<any>): Promise<'granted' | 'no-role' | 'not-owner' | 'pglite'> {
  if (await isPglite(db)) return 'pglite';
  const { rows: roles } = await sql<{ exists: boolean }>`select exists (select from pg_roles where rolname = ${APP_ROLE}) as exists`.execute(db);
  if (!roles[0]?.exists) return 'no-role';
  const { rows: owner } = await sql<{ owns: boolean }>`
    select pg_has_role(current_user, c.relowner, 'USAGE') as owns
    from pg_class c where c.oid = to_regclass('audit_log')`.execute(db);
  if (!owner[0]?.owns) return 'not-owner';
  const { rows: schema } = await sql<{ name: string }>`select quote_ident(current_schema()) as name`.execute(db);
  const s = schema[0].name;
  const statements = [
    `grant usage on schema ${s} to ${APP_ROLE}`,
    // Start from nothing each time, so a privilege granted by hand (or by an older version) does not linger.
    `revoke all on all tables in schema ${s} from ${APP_ROLE}`,
    `grant select, insert, update, delete on all tables in schema ${s} to ${APP_ROLE}`,
    `revoke update, delete on ${APPEND_ONLY_TABLES.join(', ')} from ${APP_ROLE}`,
    // No PUBLIC grant either: every privilege on the audit log is named here.
    `revoke all on ${APPEND_ONLY_TABLES.join(', ')} from public`,
    `revoke insert, update, delete on ${MIGRATION_TABLES.join(', ')} from ${APP_ROLE}`,
    `grant usage, select on all sequences in schema ${s} to ${APP_ROLE}`,
  ];
  // One transaction: between the revoke and the grants, a running coordinator on the app role
  // would otherwise get "permission denied", and a crash there would leave it with nothing.
  const run = async (tx: Kysely<any>) => {
    for (const statement of statements) await sql.raw(statement).execute(tx);
  };
  if (db.isTransaction) await run(db);
  else await db.transaction().execute(run);
  return 'granted';
}

export async function up(db: Kysely<any>): Promise<void> {
  if (await isPglite(db)) return;
  await sql.raw(CREATE_APP_ROLE_SQL).execute(db);
  // The migration tables exist (Kysely made them before running this), so the grant covers them too.
  await grantAppRole(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  // The role is cluster-wide and may serve other databases: only this database's grants go.
  if (await isPglite(db)) return;
  const { rows } = await sql<{ exists: boolean }>`select exists (select from pg_roles where rolname = ${APP_ROLE}) as exists`.execute(db);
  if (!rows[0]?.exists) return;
  const { rows: schema } = await sql<{ name: string }>`select quote_ident(current_schema()) as name`.execute(db);
  await sql.raw(`revoke all on all tables in schema ${schema[0].name} from ${APP_ROLE}`).execute(db);
  await sql.raw(`revoke all on all sequences in schema ${schema[0].name} from ${APP_ROLE}`).execute(db);
  await sql.raw(`revoke usage on schema ${schema[0].name} from ${APP_ROLE}`).execute(db);
}
