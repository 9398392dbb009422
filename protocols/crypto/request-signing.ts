/**
 * Signed HTTP requests from client nodes to the coordinator.
 *
 * A node signs a canonical string with its OpenPGP key (detached signature) and sends the
 * signature and the signed parameters in `fedmark-*` headers. TLS still protects the channel;
 * the signature adds what TLS cannot: proof of WHICH node sent a request that survives
 * TLS-terminating proxies and can be kept in the audit trail.
 *
 * Canonical string, version 1 (UTF-8, seven lines joined by "\n", no trailing newline):
 *
 *   FEDMARK-SIG-V1
 *   <METHOD>          upper-case, letters only (GET, POST, ...)
 *   <path>            request target with its query string exactly as sent (express:
 *                     req.originalUrl), starting with "/"; no normalisation of any kind
 *   <roundId>         the round the request is about, or the empty string
 *   <timestamp>       the fedmark-timestamp header: UTC ISO 8601 with milliseconds
 *                     (Date#toISOString, e.g. 2025-03-01T12:00:00.000Z)
 *   <nonce>           the fedmark-nonce header: 32 lower-case hex digits (128 random bits)
 *   <body-sha256>     SHA-256 of the exact body bytes, 64 lower-case hex digits
 *                     (e3b0c442...b855 for an empty body)
 *
 * No field may contain a control character (so none holds a "\n"), which makes the split into
 * lines unambiguous: two different requests can never produce the same canonical string.
 *
 * Why a version prefix: domain separation. The same node key also signs sealed model updates
 * (sealed-update.ts); a fixed prefix guarantees a request signature can never be presented as a
 * signature over some other object (the "context string" idea of RFC 8032's Ed25519ctx), and
 * lets a V2 format coexist with V1 during an upgrade.
 *
 * Why the body's SHA-256 and not the body: the canonical string stays ~250 bytes whether the body
 * is empty or a 4 MB model update, carries no binary data that could contain the "\n" separator,
 * and the verifier can hash the body as it streams in. SHA-256 is collision resistant, so signing
 * the digest commits to the exact bytes just as signing them would. This is how HTTP Message
 * Signatures (RFC 9421) cover a body, through a Content-Digest field (RFC 9530), and how AWS
 * SigV4 does it (hex SHA-256 of the payload in the canonical request). "Exact bytes" means the
 * raw body as received: a server that re-serialises parsed JSON will not get the same hash.
 *
 * Why a nonce AND a timestamp: with a timestamp alone, a captured request can be replayed for as
 * long as the skew window lasts; with a nonce alone, the server must remember every nonce
 * forever. Together, the server rejects anything outside +-maxSkewSeconds and only has to
 * remember nonces for that window (2 x maxSkewSeconds), which bounds the replay store. This is
 * the design of OAuth 1.0 (RFC 5849 section 3.3, oauth_timestamp + oauth_nonce) and the replay
 * advice of RFC 9421 section 7.2.2.
 *
 * The key fingerprint header only selects the key; the signature is checked against the key the
 * coordinator has registered for the node, never against a key the request brings along.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as openpgp from 'openpgp';
import type { PrivateKey } from 'openpgp';
import { CryptoKeyError, errorMessage } from './errors.ts';
import { keyStatus, toPublicKey, type PublicKeyInput } from './keys.ts';
import { signNatively } from './native-sign.ts';
import { verifiesNatively } from './native-verify.ts';

export const SIGNATURE_VERSION = 'FEDMARK-SIG-V1';

export const SIGNATURE_HEADER_NAMES = [
  'fedmark-signature',
  'fedmark-timestamp',
  'fedmark-nonce',
  'fedmark-key-fingerprint',
  'fedmark-round',
] as const;
export type SignatureHeaderName = (typeof SIGNATURE_HEADER_NAMES)[number];
/** `fedmark-signature` is the base64 of the binary detached OpenPGP signature. */
export type SignatureHeaders = Record<SignatureHeaderName, string>;

export const DEFAULT_MAX_SKEW_SECONDS = 300;

export interface CanonicalRequest {
  method: string;
  path: string;
  roundId: string;
  timestamp: string;
  nonce: string;
  bodySha256: string;
}

const METHOD = /^[A-Z]+$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const NONCE = /^[0-9a-f]{32}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const FINGERPRINT = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/; // v4 (SHA-1) or v6 (SHA-256) fingerprints
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const CONTROL = /[\u0000-\u001f\u007f]/;
const MAX_FIELD_LENGTH = 8192;

/** Why a field cannot go into a canonical string, or null when it can. */
function fieldProblem(r: CanonicalRequest): string | null {
  if (!METHOD.test(r.method)) return `method ${JSON.stringify(r.method)} is not an upper-case HTTP method`;
  if (!r.path.startsWith('/') || CONTROL.test(r.path) || r.path.length > MAX_FIELD_LENGTH) {
    return 'path must start with "/" and contain no control characters';
  }
  if (CONTROL.test(r.roundId) || r.roundId.length > MAX_FIELD_LENGTH) return 'roundId must contain no control characters';
  if (!TIMESTAMP.test(r.timestamp) || Number.isNaN(Date.parse(r.timestamp))) return 'timestamp is not an ISO 8601 UTC time';
  if (!NONCE.test(r.nonce)) return 'nonce is not 32 lower-case hex digits';
  if (!SHA256_HEX.test(r.bodySha256)) return 'body hash is not 64 lower-case hex digits';
  return null;
}

/** The exact text that is signed (see the format at the top of this file). Throws on a bad field. */
export function canonicalRequestString(r: CanonicalRequest): string {
  const problem = fieldProblem(r);
  if (problem !== null) throw new TypeError(`cannot build a canonical request: ${problem}`);
  return [SIGNATURE_VERSION, r.method, r.path, r.roundId, r.timestamp, r.nonce, r.bodySha256].join('\n');
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function detachedSignatureOk(
  data: Uint8Array,
  signatureBytes: Uint8Array,
  key: openpgp.PublicKey,
  date: Date,
): Promise<{ ok: true } | { ok: false; message: string }> {
  try {
    // Our own key and signature shape verify natively (native-verify.ts); anything else, and every
    // signature that does not verify there, gets OpenPGP.js's full verdict and error message.
    if (await verifiesNatively(data, signatureBytes, key, date)) return { ok: true };
    const signature = await openpgp.readSignature({ binarySignature: signatureBytes });
    const { signatures } = await openpgp.verify({
      message: await openpgp.createMessage({ binary: data }),
      signature,
      verificationKeys: key,
      // `date` is the signing time the request claims; OpenPGP.js refuses a signature whose
      // creation time lies after it ("in the future") and checks the key's validity then.
      date,
      format: 'binary',
    });
    // Exactly one signature, by this key: no extra packets riding along.
    if (signatures.length !== 1) return { ok: false, message: `expected one signature, found ${signatures.length}` };
    await signatures[0].verified;
    return { ok: true };
  } catch (err) {
    return { ok: false, message: errorMessage(err) };
  }
}

export interface SignRequestOptions {
  /** The node's decrypted private key (`loadPrivateKey`). */
  privateKey: PrivateKey;
  method: string;
  /** Path with query string, exactly as it will be sent. */
  path: string;
  roundId?: string;
  /** The exact bytes that will be sent as the body (empty for none). */
  body: Uint8Array;
  now?: Date;
}

/** Signs a request; returns the five `fedmark-*` headers to send with it. */
export async function signRequest(options: SignRequestOptions): Promise<SignatureHeaders> {
  const { privateKey, body } = options;
  if (!privateKey.isPrivate() || !privateKey.isDecrypted()) {
    throw new CryptoKeyError('signRequest needs a decrypted private key (see loadPrivateKey)');
  }
  const now = options.now ?? new Date();
  const roundId = options.roundId ?? '';
  const timestamp = now.toISOString();
  const nonce = randomBytes(16).toString('hex');
  const canonical = canonicalRequestString({
    method: options.method.toUpperCase(),
    path: options.path,
    roundId,
    timestamp,
    nonce,
    bodySha256: sha256Hex(body),
  });
  let signature: Uint8Array;
  try {
    // Our own key shape is signed natively (native-sign.ts: the same v4 packet, ~20x less CPU);
    // any other key, or a time at which the key may not sign, goes to OpenPGP.js.
    signature = (await signNatively(new TextEncoder().encode(canonical), privateKey, now)) ?? await openpgp.sign({
      message: await openpgp.createMessage({ binary: new TextEncoder().encode(canonical) }),
      signingKeys: privateKey,
      detached: true,
      format: 'binary',
      date: now, // the OpenPGP signature time then matches fedmark-timestamp (to the second)
    }) as Uint8Array;
  } catch (err) {
    throw new CryptoKeyError(`cannot sign request with key ${privateKey.getFingerprint()}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return {
    'fedmark-signature': Buffer.from(signature).toString('base64'),
    'fedmark-timestamp': timestamp,
    'fedmark-nonce': nonce,
    'fedmark-key-fingerprint': privateKey.getFingerprint(),
    'fedmark-round': roundId,
  };
}

/** Node's `req.headers` (lower-case keys), a plain record, or a fetch `Headers`. */
export type HeaderSource =
  | { get(name: string): string | null }
  | Record<string, string | readonly string[] | undefined>;

type HeaderValue = { kind: 'missing' } | { kind: 'duplicate' } | { kind: 'value'; value: string };

function readHeader(headers: HeaderSource, name: string): HeaderValue {
  if (typeof (headers as { get?: unknown }).get === 'function') {
    const value = (headers as { get(name: string): string | null }).get(name);
    // fetch's Headers (like Node for unknown fields) joins repeated fields with ", ": such a value
    // then fails the format checks below, or no longer matches the expected round.
    return value === null ? { kind: 'missing' } : { kind: 'value', value };
  }
  const record = headers as Record<string, string | readonly string[] | undefined>;
  const found: string[] = [];
  for (const key of Object.keys(record)) {
    if (key.toLowerCase() !== name) continue;
    const v = record[key];
    if (v === undefined) continue;
    if (typeof v === 'string') found.push(v);
    else found.push(...v);
  }
  if (found.length === 0) return { kind: 'missing' };
  if (found.length > 1) return { kind: 'duplicate' };
  return { kind: 'value', value: found[0] };
}

/**
 * - missing-headers: a required header is absent, repeated, or not in its format;
 * - key-mismatch: fedmark-key-fingerprint names another key than the one on record;
 * - revoked-key / expired-key: the key on record is revoked / expired now;
 * - stale-timestamp: fedmark-timestamp is more than maxSkewSeconds away from now (either way);
 * - bad-signature: the signature does not cover this method, path, round, timestamp, nonce and
 *   body under the key on record (a tampered request, or one signed by another key);
 * - replayed-nonce: a valid request whose nonce was already used.
 */
export type VerifyFailureReason =
  | 'missing-headers'
  | 'bad-signature'
  | 'stale-timestamp'
  | 'replayed-nonce'
  | 'key-mismatch'
  | 'expired-key'
  | 'revoked-key';

export type VerifyRequestResult =
  | { ok: true; fingerprint: string; timestamp: string; nonce: string }
  | { ok: false; reason: VerifyFailureReason; message: string };

export interface NonceContext {
  fingerprint: string;
  /** The request's signed timestamp: a store may forget the nonce once it is older than the window. */
  timestamp: Date;
}

export interface VerifyRequestOptions {
  /** The key the coordinator has on record for the node (parsed, or armored). */
  publicKey: PublicKeyInput;
  method: string;
  path: string;
  roundId?: string;
  body: Uint8Array;
  headers: HeaderSource;
  now?: Date;
  maxSkewSeconds?: number;
  /**
   * Check-and-record: returns true if the nonce was ALREADY seen (a replay), otherwise records it
   * and returns false. It must be atomic (e.g. an INSERT on a unique column), and must keep nonces
   * at least 2 x maxSkewSeconds. It is called only for requests whose signature verified, so
   * unauthenticated traffic cannot fill the store or burn a node's nonces.
   */
  seenNonce: (nonce: string, context: NonceContext) => boolean | Promise<boolean>;
}

function fail(reason: VerifyFailureReason, message: string): VerifyRequestResult {
  return { ok: false, reason, message };
}

/**
 * Verifies a signed request. Never throws because of the request: every problem with it comes
 * back as `{ ok: false, reason }`. It does throw for server-side faults (an unparseable
 * `publicKey`, a `seenNonce` that throws), which are not the node's fault and deserve a 500.
 *
 * Checks, in order: headers present and well-formed -> fingerprint header names the registered
 * key (key-mismatch) -> key not revoked / expired now -> timestamp within +-maxSkewSeconds ->
 * round header agrees with the expected round -> signature over the canonical string rebuilt from
 * THE SERVER'S method, path, round and body hash -> nonce not seen before.
 */
export async function verifyRequest(options: VerifyRequestOptions): Promise<VerifyRequestResult> {
  const now = options.now ?? new Date();
  const maxSkewSeconds = options.maxSkewSeconds ?? DEFAULT_MAX_SKEW_SECONDS;
  const key = await toPublicKey(options.publicKey);
  const keyFingerprint = key.getFingerprint();

  const values: Partial<Record<SignatureHeaderName, string>> = {};
  const missing: string[] = [];
  for (const name of SIGNATURE_HEADER_NAMES) {
    const h = readHeader(options.headers, name);
    if (h.kind === 'duplicate') return fail('missing-headers', `header ${name} appears more than once`);
    if (h.kind === 'value') values[name] = h.value.trim();
    else if (name !== 'fedmark-round') missing.push(name); // an absent round header means "no round"
  }
  if (missing.length > 0) return fail('missing-headers', `missing header(s): ${missing.join(', ')}`);
  const signatureB64 = values['fedmark-signature']!;
  const timestamp = values['fedmark-timestamp']!;
  const nonce = values['fedmark-nonce']!;
  const fingerprint = values['fedmark-key-fingerprint']!.toLowerCase();
  const roundHeader = values['fedmark-round'] ?? '';
  if (!TIMESTAMP.test(timestamp) || Number.isNaN(Date.parse(timestamp))) {
    return fail('missing-headers', 'fedmark-timestamp is not an ISO 8601 UTC time with milliseconds');
  }
  if (!NONCE.test(nonce)) return fail('missing-headers', 'fedmark-nonce is not 32 lower-case hex digits');
  if (!FINGERPRINT.test(fingerprint)) return fail('missing-headers', 'fedmark-key-fingerprint is not a key fingerprint');
  if (signatureB64.length === 0 || signatureB64.length > 16_384 || !BASE64.test(signatureB64)) {
    return fail('missing-headers', 'fedmark-signature is not base64');
  }

  if (fingerprint !== keyFingerprint) {
    return fail('key-mismatch', `request signed by key ${fingerprint}, but the key on record is ${keyFingerprint}`);
  }

  // Checked here because OpenPGP.js only checks a key at the signature's own (claimed) time.
  const status = await keyStatus(key, now);
  if (status === 'revoked') return fail('revoked-key', `key ${keyFingerprint} is revoked`);
  if (status === 'expired') return fail('expired-key', `key ${keyFingerprint} has expired`);
  if (status === 'invalid') return fail('bad-signature', `key ${keyFingerprint} has no valid self-signature`);
  // 'not-yet-valid' (key created a moment "after" now on a skewed clock) is left to the signature check.

  const signedAt = new Date(timestamp);
  const skewMs = signedAt.getTime() - now.getTime();
  if (Math.abs(skewMs) > maxSkewSeconds * 1000) {
    const direction = skewMs < 0 ? 'old' : 'in the future';
    return fail('stale-timestamp', `timestamp ${timestamp} is ${Math.round(Math.abs(skewMs) / 1000)} s ${direction} (limit ${maxSkewSeconds} s)`);
  }

  const expectedRound = options.roundId ?? '';
  if (roundHeader !== expectedRound) {
    return fail('bad-signature', `request is for round ${JSON.stringify(roundHeader)}, expected ${JSON.stringify(expectedRound)}`);
  }

  const request: CanonicalRequest = {
    method: options.method.toUpperCase(),
    path: options.path,
    roundId: expectedRound,
    timestamp,
    nonce,
    bodySha256: sha256Hex(options.body),
  };
  const problem = fieldProblem(request);
  if (problem !== null) return fail('bad-signature', `request cannot have been signed: ${problem}`);
  const canonical = new TextEncoder().encode(canonicalRequestString(request));

  const verdict = await detachedSignatureOk(canonical, Buffer.from(signatureB64, 'base64'), key, signedAt);
  if (!verdict.ok) {
    // The key may have expired or been revoked between `now` and a future-dated (skewed) timestamp.
    if (/revoked/i.test(verdict.message)) return fail('revoked-key', `key ${keyFingerprint}: ${verdict.message}`);
    if (/expired/i.test(verdict.message)) return fail('expired-key', `key ${keyFingerprint}: ${verdict.message}`);
    return fail('bad-signature', `signature does not verify: ${verdict.message}`);
  }

  if (await options.seenNonce(nonce, { fingerprint: keyFingerprint, timestamp: signedAt })) {
    return fail('replayed-nonce', `nonce ${nonce} was already used`);
  }
  return { ok: true, fingerprint: keyFingerprint, timestamp, nonce };
}
