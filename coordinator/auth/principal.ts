import type { Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database } from '../db/schema.ts';
import { ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.ts';
import { constantTimeEquals, hashSecret, newId, newSecret } from '../security.ts';
import type { AuthenticatedNode, NodeService } from '../nodes/node-service.ts';
import { appendAudit } from '../audit/audit-log.ts';
import { findApiTokenByHash, insertApiToken, listApiTokens, revokeApiToken } from './repository.ts';

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

export interface NewApiToken {
  role: 'admin' | 'auditor' | 'analyst';
  name: string;
  region?: string;
}

/** Bearer tokens: the bootstrap admin token, people's API tokens (hashed at rest), node API keys. */
export function createAuthService(deps: { db: Db; nodes: NodeService; bootstrapAdminToken: string }) {
  const { db } = deps;
  /** `executor`: a transaction, so the caller can audit the creation atomically with it. */
  async function createToken(input: NewApiToken, executor: Db | Transaction<Database> = db) {
    const token = newSecret('fmtok');
    const id = newId('tok');
    await insertApiToken(executor, { id, token_hash: hashSecret(token), role: input.role, name: input.name, region: input.region ?? null, revoked_at: null });
    return { id, token, role: input.role, name: input.name, region: input.region ?? null };
  }
  async function revokeToken(id: string, executor: Db | Transaction<Database> = db) {
    if (!(await revokeApiToken(executor, id, new Date()))) throw new NotFoundError(`no active API token ${id}`);
  }

  return {
    /** Resolves a bearer token: the bootstrap admin token, a person's API token, or a node key. */
    async authenticate(token: string): Promise<Principal> {
      if (constantTimeEquals(token, deps.bootstrapAdminToken)) return { role: 'admin', id: 'bootstrap-admin' };
      if (token.startsWith('fmtok_')) {
        const row = await findApiTokenByHash(db, hashSecret(token));
        if (!row) throw new UnauthenticatedError('unknown API token');
        if (row.revoked_at) throw new UnauthenticatedError(`API token ${row.id} was revoked`);
        if (row.role === 'analyst') return { role: 'analyst', id: row.id, region: row.region ?? '' };
        return { role: row.role, id: row.id };
      }
      const node = await deps.nodes.authenticate(token);
      return { role: 'node', id: node.id, node };
    },

    /** A node's signed request, verified with `fingerprint`: records the nonce and reads the node now (NodeService.confirmSignedRequest). */
    confirmNodeRequest: deps.nodes.confirmSignedRequest,
    /** A node as the database has it now (not as remembered); 401 when revoked or gone. */
    reloadNode: deps.nodes.reload,

    createToken,
    revokeToken,

    /** Creates a token and its `token.created` audit entry, atomically; `actor` is who asked. */
    async issueToken(input: NewApiToken, actor: string) {
      return db.transaction().execute(async (tx) => {
        const c = await createToken(input, tx);
        await appendAudit(tx, { actor, kind: 'token.created', data: { tokenId: c.id, role: c.role, name: c.name, region: c.region } });
        return c;
      });
    },

    /** Revokes a token with its `token.revoked` audit entry, atomically (404 when none is active). */
    async revokeTokenAudited(id: string, actor: string) {
      await db.transaction().execute(async (tx) => {
        await revokeToken(id, tx);
        await appendAudit(tx, { actor, kind: 'token.revoked', data: { tokenId: id } });
      });
    },

    async listTokens() {
      const rows = await listApiTokens(db);
      return rows.map((r) => ({ ...r, created_at: new Date(r.created_at).toISOString(), revoked_at: r.revoked_at ? new Date(r.revoked_at).toISOString() : null }));
    },
  };
}
export type AuthService = ReturnType<typeof createAuthService>;

/** Throws 403 unless the principal has one of the roles. */
export function requireRole<R extends Role>(principal: Principal, ...roles: R[]): asserts principal is Extract<Principal, { role: R }> {
  if (!roles.includes(principal.role as R)) throw new ForbiddenError(`the ${principal.role} role may not do this (allowed: ${roles.join(', ')})`);
}
