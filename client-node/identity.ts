import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { fingerprintOf, loadOrCreateIdentity, loadPublicKey, verifyKeyRotation, type PublicKey } from '../protocols/crypto/index.ts';
import type { EnrollResponse } from '../protocols/messages.ts';
import { CoordinatorClient, CoordinatorRefusal } from './coordinator-client.ts';
import { NodeStoppedError, type NodeConfig } from './config.ts';
import { NodePolicyRequiredError } from './policy.ts';

/**
 * Who this node is and whom it trusts: its OpenPGP identity, its enrollment (credentials kept in
 * the state dir) and the coordinator key pinned at enrollment, moved only by a verified rotation.
 */

export interface Credentials {
  coordinator: string;
  nodeId: string;
  apiKey: string;
  studyId: string;
  name: string;
  region: string;
  /** The jurisdiction the coordinator enrolled this node under (absent in credentials saved before it was recorded). */
  jurisdiction?: string;
  /** The coordinator key this node trusts (pinned at enrollment, moved only by a verified rotation). */
  coordinatorPublicKey: string;
  coordinatorFingerprint: string;
  /** sha256 of the enrollment token this enrollment came from (absent in credentials saved before it was recorded). */
  tokenSha256?: string;
}

/** Node keys expire after a year; rotate with CoordinatorClient.rotateKey (a request signed by the old key). */
export const NODE_KEY_LIFETIME_SECONDS = 365 * 24 * 3600;

/**
 * The S2K octet count protecting a new node key at rest. An iterated S2K's count only makes each
 * passphrase GUESS cost more: it is key stretching for passphrases people choose. RFC 9580
 * section 3.7.3 (String-to-Key Usage) allows even an unstretched Salted S2K when "the
 * implementation knows that the input string is high-entropy (for example, it generated the string
 * itself using a known-good source of randomness)". A passphrase declared random
 * (keyPassphraseRandom: the demo's, 24 random bytes, 192 bits) cannot be guessed whatever the
 * count, so it gets the smallest count of the Iterated and Salted S2K (coded count 0: 1,024
 * octets, section 3.7.1.3) instead of OpenPGP.js's default 224 (16 M octets: two derivations at
 * generation, two at every load, ~0.1 s of CPU each and a 16 MB buffer, per node). The key stays
 * AES-256 encrypted at rest and readable by GnuPG; a chosen passphrase keeps the default.
 */
export function s2kCountByteFor(config: Pick<NodeConfig, 'keyPassphraseRandom'>): number | undefined {
  return config.keyPassphraseRandom ? 0 : undefined;
}

export function loadIdentity(config: Pick<NodeConfig, 'stateDir' | 'keyPassphrase' | 'keyPassphraseRandom'>, dir = 'identity') {
  const s2kIterationCountByte = s2kCountByteFor(config);
  return loadOrCreateIdentity(join(config.stateDir, dir), { name: 'fedmark node', passphrase: config.keyPassphrase, expiresInSeconds: NODE_KEY_LIFETIME_SECONDS, ...(s2kIterationCountByte === undefined ? {} : { s2kIterationCountByte }) });
}

export function saveCredentials(stateDir: string, credentials: Credentials) {
  // The API key is a secret: readable by this user only.
  writeFileSync(join(stateDir, 'credentials.json'), JSON.stringify(credentials, null, 2), { mode: 0o600 });
}

/** sha256 of an enrollment token: which token an enrollment came from, without keeping the token. */
const tokenHash = (token: string) => createHash('sha256').update(token).digest('hex');

function readCredentials(stateDir: string): Credentials | undefined {
  const file = join(stateDir, 'credentials.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Credentials) : undefined;
}

/** The coordinator judges this node by the jurisdiction it enrolled under; a node now run under another would check studies against a law the coordinator does not apply to it. */
function requireEnrolledJurisdiction(saved: Credentials, jurisdiction: string) {
  if (saved.jurisdiction && saved.jurisdiction !== jurisdiction) throw new NodePolicyRequiredError(`this node enrolled under jurisdiction ${saved.jurisdiction} but now runs with ${jurisdiction}; run it with its enrolled jurisdiction or enroll again with a new token`);
}

/**
 * The enrollment to run: the saved one, unless a --token it did not come from is given. A new
 * token enrolls (in the token's study) and the previous enrollment is archived under
 * `enrollments/<nodeId>/`: a node restarted with its old state folder and a new token never
 * silently rejoins its old study. The same token again (the partner's unchanged command line) is
 * the saved enrollment.
 */
export async function loadOrEnroll(config: NodeConfig, client: CoordinatorClient, log: Logger, publicKey: string, jurisdiction: string): Promise<Credentials> {
  const found = readCredentials(config.stateDir);
  const saved = found?.coordinator === config.coordinator ? found : undefined;
  if (saved && (!config.token || saved.tokenSha256 === tokenHash(config.token))) {
    requireEnrolledJurisdiction(saved, jurisdiction);
    log.info({ nodeId: saved.nodeId, studyId: saved.studyId }, 'using saved node credentials');
    return saved;
  }
  if (!config.token) throw new Error(`no saved credentials in ${config.stateDir} and no --token to enroll with`);
  let enrolled: EnrollResponse;
  try {
    enrolled = await client.enroll(config.token, publicKey, jurisdiction);
  } catch (err) {
    if (!(err instanceof CoordinatorRefusal)) throw err;
    // Credentials saved before enrollments recorded their token: a used token is, in all
    // likelihood, the one they came from (it can enroll nothing else either way).
    if (saved && !saved.tokenSha256 && err.code === 'TOKEN_USED') {
      requireEnrolledJurisdiction(saved, jurisdiction);
      log.warn({ nodeId: saved.nodeId, studyId: saved.studyId }, 'this enrollment token was already used; running the enrollment saved in the state folder, taken to be the one it made');
      saveCredentials(config.stateDir, { ...saved, tokenSha256: tokenHash(config.token) });
      return saved;
    }
    const held = found ? ` This state folder (${config.stateDir}) holds node ${found.name}'s enrollment in study ${found.studyId}, made with another token: to run it, start the node without --token; to join another study, ask the operator for a new token.` : '';
    const stop = new NodeStoppedError('enrollment-refused', `the coordinator refused the enrollment token (${err.code}): ${err.message}.${held}`);
    log.error({ stop: stop.reason, exitCode: stop.exitCode }, stop.message);
    throw stop;
  }
  if (config.coordinatorKey) {
    const expected = await fingerprintOf(readFileSync(config.coordinatorKey, 'utf8'));
    if (expected !== enrolled.coordinatorFingerprint) throw new Error(`the coordinator presented key ${enrolled.coordinatorFingerprint}, not the pinned ${expected} from ${config.coordinatorKey}; refusing to work with it`);
  }
  if (found) archiveEnrollment(config.stateDir, found, enrolled.studyId, log);
  const credentials: Credentials = { coordinator: config.coordinator, ...enrolled, jurisdiction: enrolled.jurisdiction ?? jurisdiction, tokenSha256: tokenHash(config.token) };
  saveCredentials(config.stateDir, credentials);
  log.info({ nodeId: enrolled.nodeId, studyId: enrolled.studyId, name: enrolled.name, region: enrolled.region, jurisdiction: credentials.jurisdiction }, 'enrolled');
  return credentials;
}

/** Moves an enrollment replaced by a new token to `enrollments/<nodeId>/credentials.json` (kept: its API key may still be needed to withdraw it). */
function archiveEnrollment(stateDir: string, old: Credentials, newStudyId: string, log: Logger) {
  const dir = join(stateDir, 'enrollments', old.nodeId.replace(/[^A-Za-z0-9_.-]/g, '_'));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  renameSync(join(stateDir, 'credentials.json'), join(dir, 'credentials.json'));
  log.warn({ nodeId: old.nodeId, studyId: old.studyId, archivedTo: dir, newStudyId }, `a new enrollment token: the enrollment of node ${old.nodeId} in study ${old.studyId} was archived to ${dir}; this node now takes part in study ${newStudyId}`);
}

/**
 * The coordinator key this node trusts: the pinned one, moved along the coordinator's rotation
 * announcements, each verified by its predecessor (and saved, so a restart keeps following).
 */
export class CoordinatorTrust {
  private constructor(
    private current: PublicKey,
    private readonly credentials: Credentials,
    private readonly client: CoordinatorClient,
    private readonly stateDir: string,
    private readonly log: Logger,
  ) {}

  static async pinned(credentials: Credentials, client: CoordinatorClient, stateDir: string, log: Logger): Promise<CoordinatorTrust> {
    return new CoordinatorTrust(await loadPublicKey(credentials.coordinatorPublicKey), credentials, client, stateDir, log);
  }

  get key(): PublicKey {
    return this.current;
  }

  get fingerprint(): string {
    return this.credentials.coordinatorFingerprint;
  }

  /** Follows verified rotations from the trusted key; true when the key moved. */
  async followRotations(): Promise<boolean> {
    const info = await this.client.coordinatorKey();
    let moved = false;
    for (const rotation of info.rotations) {
      const next = await verifyKeyRotation(rotation.announcement, this.current);
      if (!next) continue;
      this.current = await loadPublicKey(next.newPublicKeyArmored);
      this.credentials.coordinatorPublicKey = next.newPublicKeyArmored;
      this.credentials.coordinatorFingerprint = next.fingerprint;
      moved = true;
      this.log.info({ from: next.oldFingerprint, to: next.fingerprint }, 'coordinator key rotation verified; now trusting the new key');
    }
    if (moved) saveCredentials(this.stateDir, this.credentials);
    return moved;
  }
}

/** Reloads this node's saved identity and credentials for a one-off action (withdraw, rotate). */
export async function savedNode(config: NodeConfig) {
  const file = join(config.stateDir, 'credentials.json');
  if (!existsSync(file)) throw new Error(`no saved credentials in ${config.stateDir}: this node never enrolled`);
  const credentials = JSON.parse(readFileSync(file, 'utf8')) as Credentials;
  const identity = await loadIdentity(config);
  const client = new CoordinatorClient(config.coordinator);
  client.authenticate(credentials.apiKey, identity.privateKey);
  return { credentials, identity, client };
}
