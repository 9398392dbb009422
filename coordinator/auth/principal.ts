import type { Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import { constantTimeEquals, hashSecret, newId, newSecret } from '../security.ts';
import type { AuthenticatedNode, NodeService } from '../nodes/node-service.ts';

/**
 * Who is calling. Roles: admin (studies, enrollment, rounds, tokens), auditor (read-only: rounds,
 * privacy reports, audit log; never weights), analyst (a regional team: its region's metrics and
 * the global models), node (its own tasks only).
 */
export type Principal =
  | { role: 'admin'; id: string }
  | { role: 'auditor'; id: string }
  | { role: 'analyst'; id: string; region: string }
  | { role: 'node'; id: string; node: AuthenticatedNode };

export type Role = Principal['role'];

export function createAuthService(deps: { db: Db; nodes: NodeService; bootstrapAdminToken: string }) {
  const { db } = deps;
  return {
    /** Resolves a bearer token: the bootstrap admin token, a person's API token, or a node key. */
    async authenticate(token: string): Promise<Principal> {
      if (constantTimeEquals(token, deps.bootstrapAdminToken)) return { role: 'admin', id: 'bootstrap-admin' };
      if (token.startsWith('fmtok_')) {
        const row = await db.selectFrom('api_tokens').selectAll().where('token_hash', '=', hashSecret(token)).executeTakeFirst();
        if (!row) throw new UnauthenticatedError('unknown API token');
        if (row.revoked_at) throw new UnauthenticatedError(`API token ${row.id} was revoked`);
        if (row.role === 'analyst') return { role: 'analyst', id: row.id, region: row.region ?? '' };
        return { role: row.role, id: row.id };
      }
      const node = await deps.nodes.authenticate(token);
      return { role: 'node', id: node.id, node };
    },

    /** `executor`: a transaction, so the caller can audit the creation atomically with it. */
    async createToken(input: { role: 'admin' | 'auditor' | 'analyst'; name: string; region?: string }, executor: Db | Transaction<Database> = db) {
      const token = newSecret('fmtok');
      const id = newId('tok');
      await executor.insertInto('api_tokens').values({ id, token_hash: hashSecret(token), role: input.role, name: input.name, region: input.region ?? null, revoked_at: null }).execute();
      return { id, token, role: input.role, name: input.name, region: input.region ?? null };
    },

    async revokeToken(id: string, executor: Db | Transaction<Database> = db) {
      const result = await executor.updateTable('api_tokens').set({ revoked_at: new Date() }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
      if (Number(result.numUpdatedRows) === 0) throw new NotFoundError(`no active API token ${id}`);
    },

    async listTokens() {
      const rows = await db.selectFrom('api_tokens').select(['id', 'role', 'name', 'region', 'created_at', 'revoked_at']).orderBy('created_at').execute();
      return rows.map((r) => ({ ...r, created_at: new Date(r.created_at).toISOString(), revoked_at: r.revoked_at ? new Date(r.revoked_at).toISOString() : null }));
    },
  };
}
export type AuthService = ReturnType<typeof createAuthService>;

/** Throws 403 unless the principal has one of the roles. */
export function requireRole<R extends Role>(principal: Principal, ...roles: R[]): asserts principal is Extract<Principal, { role: R }> {
  if (!roles.includes(principal.role as R)) throw new ForbiddenError(`the ${principal.role} role may not do this (allowed: ${roles.join(', ')})`);
}
