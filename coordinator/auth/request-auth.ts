import type { Request } from 'express';
import { verifyRequest } from '../../protocols/crypto/index.ts';
import type { Db } from '../db/database.ts';
import { SignatureRefusedError, UnauthenticatedError } from '../errors.ts';
import { rawBodyOf } from '../http/middleware.ts';
import type { AuthenticatedNode, SignedRequestCheck } from '../nodes/node-service.ts';
import { requireRole, type AuthService, type Principal } from './principal.ts';
import { forgetNoncesBefore } from './repository.ts';

/** The bearer token of a request, or 401. */
export function bearer(req: Request): string {
  const header = req.get('authorization') ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new UnauthenticatedError('missing bearer token (Authorization: Bearer <token>)');
  return match[1];
}

/** How often expired nonces are deleted (they are refused by their timestamp anyway). */
const NONCE_FORGET_INTERVAL_MS = 60_000;

/** What a node's signature covers beyond method, path, time and nonce. */
export interface SignedParts {
  /** The exact body bytes (default: the JSON body as received). */
  body?: Uint8Array;
  /** The round binding (default: the fedmark-round header, or none). */
  roundId?: string;
  /** The bearer already looked up by a route that had to know the caller early. */
  claimed?: Principal;
}

/**
 * Request authentication, one per app: who is calling, and for nodes the signed-request check.
 *
 * @example
 *   const guard = createRequestGuard({ auth, db, maxClockSkewSeconds: 300 });
 *   const node = await guard.requireNode(req); // 401/403 unless a node's signed request
 */
export function createRequestGuard(deps: { auth: Pick<AuthService, 'authenticate' | 'confirmNodeRequest' | 'reloadNode'>; db: Db; maxClockSkewSeconds: number }) {
  const verified = new WeakMap<Request, Promise<Principal>>();
  const claims = new WeakMap<Request, Promise<Principal>>();
  /** When this process last forgot expired nonces (see seenNonce). */
  let lastForget = 0;

  /**
   * Who the bearer token says the caller is, looked up once per request (the study access check
   * runs before the route and the route asks again). A person's token is their whole credential:
   * the actor is set. A node is only `claimed-node:<id>` until its signature verifies (`who`).
   */
  const claim = (req: Request): Promise<Principal> => {
    let p = claims.get(req);
    if (!p) {
      p = (async () => {
        const principal = await deps.auth.authenticate(bearer(req));
        req.res!.locals.actor ??= principal.role === 'node' ? `claimed-node:${principal.id}` : `${principal.role}:${principal.id}`;
        return principal;
      })();
      claims.set(req, p);
    }
    return p;
  };

  /**
   * Who is calling. A node must carry its API key AND an OpenPGP signature, by the key pinned at
   * enrollment, over method, path, round, timestamp, nonce and the exact body bytes; that check
   * runs once per request (a second would see its own nonce as a replay).
   */
  const who = (req: Request, signed: SignedParts = {}): Promise<Principal> => {
    let p = verified.get(req);
    if (!p) {
      p = (async () => {
        const principal = signed.claimed ?? (await claim(req));
        // Until its signature verifies, a node is only who the request claims to be.
        if (principal.role === 'node') {
          req.res!.locals.actor = `claimed-node:${principal.id}`;
          const node = await verifyNodeSignature(req, principal.node, signed.body ?? rawBodyOf(req), signed.roundId ?? req.get('fedmark-round') ?? '');
          req.res!.locals.actor = `node:${principal.id}`;
          return { ...principal, node };
        }
        req.res!.locals.actor = `${principal.role}:${principal.id}`;
        return principal;
      })();
      verified.set(req, p);
    }
    return p;
  };

  /**
   * A node's signed request: the signature checked against the key its API key claims, then the
   * nonce recorded in the same statement that reads the node again (revoked: 401 at once). A key
   * rotated since the claim is checked once more against the key now on record. The node as read
   * by that statement is returned.
   */
  async function verifyNodeSignature(req: Request, node: AuthenticatedNode, body: Uint8Array, roundId: string, retried = false): Promise<AuthenticatedNode> {
    if (!node.publicKey) throw new UnauthenticatedError(`node ${node.id} has no key on record`);
    let check: SignedRequestCheck | undefined;
    // A nonce is good once. It is recorded only for a request whose signature verified, so
    // unsigned traffic cannot fill the store or burn a node's nonces.
    const seenNonce = async (nonce: string, ctx: { fingerprint: string }): Promise<boolean> => {
      // Nonces older than twice the allowed skew can never be replayed (their timestamp is stale).
      // Forgotten once a minute, not every 500 requests: request_nonces has no index on seen_at,
      // so each delete scans the table, which holds every nonce of the last 2 x skew (at 50 nodes
      // x 4 requests per 0.2 s round that was a 600k-row scan every half second).
      if (Date.now() - lastForget >= NONCE_FORGET_INTERVAL_MS) {
        lastForget = Date.now();
        await forgetNoncesBefore(deps.db, new Date(lastForget - 2 * deps.maxClockSkewSeconds * 1000));
      }
      check = await deps.auth.confirmNodeRequest(node.id, ctx.fingerprint, nonce);
      return check.outcome !== 'recorded';
    };
    const result = await verifyRequest({ publicKey: node.publicKey, method: req.method, path: req.originalUrl, roundId, body, headers: req.headers, maxSkewSeconds: deps.maxClockSkewSeconds, seenNonce });
    if (check?.outcome === 'key-rotated' && !retried) return verifyNodeSignature(req, check.node, body, roundId, true);
    if (check?.outcome === 'key-rotated') throw new SignatureRefusedError('key-mismatch', `node ${node.id}'s key changed while its request was checked`);
    // Signed by another key than the one remembered: the key may have been rotated elsewhere (another replica); read it again once.
    if (!result.ok && result.reason === 'key-mismatch' && !retried) return verifyNodeSignature(req, await deps.auth.reloadNode(node.id), body, roundId, true);
    if (!result.ok) throw new SignatureRefusedError(result.reason, result.message);
    return check!.node;
  }

  return {
    who,
    /** Who the bearer claims to be, with no signature check yet (a route that must refuse before reading the body). */
    claim,
    async requireAdmin(req: Request) {
      const p = await who(req);
      requireRole(p, 'admin');
      return p;
    },
    /** A node's signed request: the node, or 401/403. */
    async requireNode(req: Request, signed: SignedParts = {}): Promise<AuthenticatedNode> {
      const p = await who(req, { body: signed.body ?? rawBodyOf(req), roundId: signed.roundId ?? '', claimed: signed.claimed });
      requireRole(p, 'node');
      return p.node;
    },
  };
}
export type RequestGuard = ReturnType<typeof createRequestGuard>;
