import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { fingerprintOf, loadOrCreateIdentity, loadPublicKey, verifyKeyRotation, type PublicKey } from '../protocols/crypto/index.ts';
import { CoordinatorClient } from './coordinator-client.ts';
import type { NodeConfig } from './config.ts';
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
}

/** Node keys expire after a year; rotate with CoordinatorClient.rotateKey (a request signed by the old key). */
export const NODE_KEY_LIFETIME_SECONDS = 365 * 24 * 3600;

export function loadIdentity(config: Pick<NodeConfig, 'stateDir' | 'keyPassphrase'>, dir = 'identity') {
  return loadOrCreateIdentity(join(config.stateDir, dir), { name: 'fedmark node', passphrase: config.keyPassphrase, expiresInSeconds: NODE_KEY_LIFETIME_SECONDS });
}

export function saveCredentials(stateDir: string, credentials: Credentials) {
  // The API key is a secret: readable by this user only.
  writeFileSync(join(stateDir, 'credentials.json'), JSON.stringify(credentials, null, 2), { mode: 0o600 });
}

/** Saved credentials for this coordinator, or a fresh enrollment with the one-time token. */
export async function loadOrEnroll(config: NodeConfig, client: CoordinatorClient, log: Logger, publicKey: string, jurisdiction: string): Promise<Credentials> {
  const file = join(config.stateDir, 'credentials.json');
  if (existsSync(file)) {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as Credentials;
    if (saved.coordinator === config.coordinator) {
      // The coordinator judges this node by the jurisdiction it enrolled under; a node now run
      // under another would check studies against a law the coordinator does not apply to it.
      if (saved.jurisdiction && saved.jurisdiction !== jurisdiction) throw new NodePolicyRequiredError(`this node enrolled under jurisdiction ${saved.jurisdiction} but now runs with ${jurisdiction}; run it with its enrolled jurisdiction or enroll again with a new token`);
      log.info({ nodeId: saved.nodeId, studyId: saved.studyId }, 'using saved node credentials');
      return saved;
    }
  }
  if (!config.token) throw new Error(`no saved credentials in ${config.stateDir} and no --token to enroll with`);
  const enrolled = await client.enroll(config.token, publicKey, jurisdiction);
  if (config.coordinatorKey) {
    const expected = await fingerprintOf(readFileSync(config.coordinatorKey, 'utf8'));
    if (expected !== enrolled.coordinatorFingerprint) throw new Error(`the coordinator presented key ${enrolled.coordinatorFingerprint}, not the pinned ${expected} from ${config.coordinatorKey}; refusing to work with it`);
  }
  const credentials: Credentials = { coordinator: config.coordinator, ...enrolled, jurisdiction: enrolled.jurisdiction ?? jurisdiction };
  saveCredentials(config.stateDir, credentials);
  log.info({ nodeId: enrolled.nodeId, studyId: enrolled.studyId, name: enrolled.name, region: enrolled.region, jurisdiction: credentials.jurisdiction }, 'enrolled');
  return credentials;
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
