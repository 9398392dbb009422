import { setTimeout as sleep } from 'node:timers/promises';
import { signRequest, sealUpdate, type PrivateKey, type PublicKey } from '../protocols/crypto/index.ts';
import type { z } from 'zod';
import { PolicyProfile } from '../protocols/policy/jurisdiction-policy.ts';
import { roundBinding, EnrollResponse, StudyConfig, TaskMessage, UPDATE_META_HEADER, type Task, UpdateReceipt, type EvaluationReport, type NodeStatusReport, type UpdateMeta } from '../protocols/messages.ts';
import type { Released } from './release.ts';
import { frameUpdate, UPDATE_TYPE, UPDATE_WITH_EVALUATION_TYPE } from '../protocols/update-frame.ts';
import { exchange, type Answer } from './http-transport.ts';

/**
 * The receipt without its `next` (parsed apart, leniently). Built once: zod compiles a schema on
 * its first parse, and `.omit()` at every update made a new one each time (~0.4 ms a node-round).
 */
const StoredReceipt = UpdateReceipt.omit({ next: true });

/** An update's weights encrypted to the coordinator and signed by this node (see seal()). */
export interface SealedUpdate {
  readonly sealed: Uint8Array;
  /** Bytes of the plain encoded weights, for this node's own log. */
  readonly plainBytes: number;
}

/** A refusal from the coordinator (4xx): retrying will not help. */
export class CoordinatorRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface RequestInit {
  body?: Uint8Array | string;
  headers?: Record<string, string>;
  attempts?: number;
  timeoutMs?: number;
  roundId?: string;
}

/**
 * The node's only way out: outbound HTTPS calls to the coordinator (partner data centers allow
 * egress, not ingress). Network errors and 5xx are retried with backoff; every write is idempotent
 * on the coordinator's side, so a retry never counts twice.
 */
export class CoordinatorClient {
  private apiKey?: string;
  /** The study config last received with a task, by its hash (see nextTask). */
  private heldConfig?: { sha256: string; config: StudyConfig };
  private signingKey?: PrivateKey;

  constructor(
    private readonly baseUrl: string,
    private readonly onRetry: (what: string, attempt: number, err: unknown) => void = () => {},
  ) {}

  /** From enrollment on, every request carries the API key and a signature by the node's key. */
  authenticate(apiKey: string, signingKey: PrivateKey) {
    this.apiKey = apiKey;
    this.signingKey = signingKey;
  }

  /**
   * A request, retried on network errors and 5xx. `read` consumes the answer's body inside the
   * retry loop, so a connection cut mid-body is retried too (the body arrives after the headers:
   * a model is megabytes).
   */
  private async request(method: string, path: string, init?: RequestInit): Promise<Answer>;
  private async request<T>(method: string, path: string, init: RequestInit, read: (res: Answer) => Promise<T>): Promise<T>;
  private async request<T>(method: string, path: string, init: RequestInit = {}, read?: (res: Answer) => Promise<T>): Promise<T | Answer> {
    const attempts = init.attempts ?? 6;
    const bytes = typeof init.body === 'string' ? new TextEncoder().encode(init.body) : (init.body ?? new Uint8Array(0));
    for (let attempt = 1; ; attempt++) {
      try {
        // Signed afresh on every attempt: a new nonce and timestamp, so a retry is not a replay.
        const signature = this.signingKey ? await signRequest({ privateKey: this.signingKey, method, path, roundId: init.roundId, body: bytes }) : {};
        const res = await exchange(new URL(path, this.baseUrl), {
          method,
          headers: { ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}), ...signature, ...init.headers },
          body: init.body === undefined ? undefined : bytes,
          timeoutMs: init.timeoutMs ?? 120_000,
        });
        if (res.status >= 500 && attempt < attempts) throw new Error(`coordinator answered ${res.status}`);
        // Never followed: a node talks to the coordinator it was configured with, nothing else.
        if (res.status >= 300 && res.status < 400) throw new CoordinatorRefusal(res.status, 'REDIRECT', `the coordinator answered ${res.status}, a redirect to ${res.headers.get('location') ?? '(no location)'}: nodes do not follow redirects; set --coordinator to the coordinator's own URL`);
        if (res.status >= 400) {
          const body = (await res.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
          throw new CoordinatorRefusal(res.status, body.error?.code ?? 'HTTP_' + res.status, body.error?.message ?? `HTTP ${res.status}`);
        }
        return read ? await read(res) : res;
      } catch (err) {
        if (err instanceof CoordinatorRefusal || attempt >= attempts) throw err;
        this.onRetry(`${method} ${path}`, attempt, err);
        await sleep(Math.min(10_000, 200 * 2 ** attempt));
      }
    }
  }

  private async json<S extends z.ZodType>(schema: S, res: Answer): Promise<z.infer<S>> {
    return schema.parse(await res.json());
  }

  async enroll(token: string, publicKey: string, jurisdiction?: string): Promise<EnrollResponse> {
    const res = await this.request('POST', '/v1/nodes/enroll', { body: JSON.stringify({ token, publicKey, jurisdiction }), headers: { 'content-type': 'application/json' }, attempts: 3 });
    return this.json(EnrollResponse, res);
  }

  /** The node's study: its state (running, completed, stopped...), why it stopped if it did, and its config. */
  async study(): Promise<{ studyId: string; state: string; stopReason: string | null; config: StudyConfig }> {
    const res = await this.request('GET', '/v1/nodes/me/study');
    const body = (await res.json()) as { studyId: string; state: string; stopReason?: string | null; config: unknown };
    return { studyId: body.studyId, state: body.state, stopReason: body.stopReason ?? null, config: StudyConfig.parse(body.config) };
  }

  /** This node's own record on the coordinator: its state and the rounds it took part in. */
  async me(): Promise<{ id: string; studyId: string; name: string; state: string; message: string | null; rounds: number }> {
    const res = await this.request('GET', '/v1/nodes/me');
    return (await res.json()) as { id: string; studyId: string; name: string; state: string; message: string | null; rounds: number };
  }

  /** A status report, as the release step built it (its `data` only when the study releases it). */
  async reportStatus(report: Released<NodeStatusReport>): Promise<void> {
    await this.request('POST', '/v1/nodes/me/status', { body: JSON.stringify(report), headers: { 'content-type': 'application/json' } });
  }

  /**
   * The policy profile in force on the coordinator for this node's jurisdiction (null: none).
   * Not trusted as such: the node only ever applies it combined with its own, the stricter wins.
   */
  async policy(): Promise<{ jurisdiction: string | null; policy: PolicyProfile | null }> {
    const res = await this.request('GET', '/v1/nodes/me/policy', { attempts: 3 });
    const body = (await res.json()) as { jurisdiction: string | null; policy: unknown };
    return { jurisdiction: body.jurisdiction, policy: body.policy ? PolicyProfile.parse(body.policy) : null };
  }

  /**
   * Long-polls for the next task; undefined when there is none yet. The study config is held by
   * its hash (Task.configSha256) and echoed, so later tasks come without it: parsing the full
   * StudyConfig at every poll was most of a node's zod time (issue 13).
   */
  async nextTask(waitSeconds: number): Promise<Task | undefined> {
    const res = await this.request('GET', `/v1/tasks/next?${this.taskQuery(waitSeconds)}`, { timeoutMs: (waitSeconds + 30) * 1000 });
    if (res.status === 204) return undefined;
    return this.taskOf(TaskMessage.parse(await res.json()));
  }

  /** ?wait=S, and the hash of the study config this node holds (the task then comes without it). */
  private taskQuery(waitSeconds: number): string {
    return `wait=${waitSeconds}${this.heldConfig ? `&config=${this.heldConfig.sha256}` : ''}`;
  }

  /** A task as received (its config possibly left out, held here by its hash) as the node works on it. */
  private async taskOf(message: TaskMessage): Promise<Task | undefined> {
    const held = this.heldConfig;
    const { config, ...task } = message;
    if (config) {
      if (task.configSha256) this.heldConfig = { sha256: task.configSha256, config };
      return { ...task, config };
    }
    if (held && task.configSha256 === held.sha256) return { ...task, config: held.config };
    // Left out for a hash this node does not hold (a coordinator bug): asked again in full.
    this.heldConfig = undefined;
    if (held) return this.nextTask(0);
    throw new Error('the coordinator sent a task without its study config');
  }

  async downloadModel(studyId: string, version: number): Promise<{ bytes: Uint8Array; sha256: string | null; signature: string | null }> {
    return this.request('GET', `/v1/studies/${encodeURIComponent(studyId)}/models/${version}`, {}, async (res) => {
      const signature = res.headers.get('fedmark-model-signature');
      return { bytes: new Uint8Array(await res.arrayBuffer()), sha256: res.headers.get('fedmark-sha256'), signature: signature ? Buffer.from(signature, 'base64').toString('utf8') : null };
    });
  }

  /** The coordinator's current key and its rotation announcements (public, unauthenticated). */
  async coordinatorKey(): Promise<{ fingerprint: string; publicKey: string; rotations: Array<{ fingerprint: string; announcement: string }> }> {
    const res = await this.request('GET', '/v1/coordinator/key');
    return (await res.json()) as { fingerprint: string; publicKey: string; rotations: Array<{ fingerprint: string; announcement: string }> };
  }

  /** Seals encoded weights: encrypted to the coordinator's (pinned) key, signed by this node's. */
  async seal(body: Uint8Array, coordinatorKey: PublicKey): Promise<SealedUpdate> {
    if (!this.signingKey) throw new Error('seal before enrollment');
    return { sealed: await sealUpdate({ bytes: body, coordinatorPublicKey: coordinatorKey, nodePrivateKey: this.signingKey }), plainBytes: body.length };
  }

  /**
   * Submits sealed weights with the metadata the release step built. Sealed once, before this:
   * retries resend the same bytes.
   */
  /**
   * With `waitSeconds` > 0 the coordinator holds the answer, once the update is accepted, until this
   * node's next task (at most that long): the receipt's `next`, here as the task to work on
   * (`nextTask`), so a round costs one signed request instead of an update and a task poll.
   * Retries (the same sealed bytes) get the original receipt and ask for the task again.
   */
  async submitUpdate(studyId: string, round: number, meta: Released<UpdateMeta>, update: SealedUpdate, evaluation?: { round: number; report: Released<EvaluationReport> }, waitSeconds = 0): Promise<UpdateReceipt & { nextTask?: Task }> {
    const metaHeader = JSON.stringify(meta);
    const query = waitSeconds > 0 ? `?${this.taskQuery(waitSeconds)}` : '';
    const res = await this.request('POST', `/v1/studies/${encodeURIComponent(studyId)}/rounds/${round}/updates${query}`, {
      timeoutMs: (waitSeconds + 120) * 1000,
      // The previous round's evaluation, when given, rides in the same (signed) body.
      body: evaluation ? frameUpdate(JSON.stringify(evaluation), update.sealed) : update.sealed,
      // Binds the metadata header to the signature too (see the coordinator's update route).
      roundId: roundBinding(studyId, round, metaHeader),
      headers: { 'content-type': evaluation ? UPDATE_WITH_EVALUATION_TYPE : UPDATE_TYPE, [UPDATE_META_HEADER]: metaHeader },
    });
    // The update is stored once this answers: a `next` this node cannot use (another version's
    // message, a failed request for the config) only means it polls for its task as before.
    const { next, ...receipt } = (await res.json()) as Record<string, unknown>;
    const stored = StoredReceipt.parse(receipt);
    const nextTask = next === undefined ? undefined : await this.usableTask(next);
    return { ...stored, ...(nextTask ? { nextTask } : {}) };
  }

  private async usableTask(message: unknown): Promise<Task | undefined> {
    const parsed = TaskMessage.safeParse(message);
    if (!parsed.success) return undefined;
    return this.taskOf(parsed.data).catch(() => undefined);
  }

  async submitEvaluation(studyId: string, round: number, report: Released<EvaluationReport>): Promise<void> {
    await this.request('POST', `/v1/studies/${encodeURIComponent(studyId)}/rounds/${round}/evaluations`, {
      body: JSON.stringify(report),
      roundId: roundBinding(studyId, round),
      headers: { 'content-type': 'application/json' },
    });
  }

  /** Leaves the study: the coordinator excludes this node from every later round. */
  async withdraw(reason?: string): Promise<void> {
    await this.request('POST', '/v1/nodes/me/withdraw', { body: JSON.stringify({ reason }), headers: { 'content-type': 'application/json' }, attempts: 3 });
  }

  /** Rotates this node's key: the request is signed by the old key, the body carries the new one. */
  async rotateKey(newPublicKey: string): Promise<{ fingerprint: string }> {
    const res = await this.request('POST', '/v1/nodes/me/key', { body: JSON.stringify({ publicKey: newPublicKey }), headers: { 'content-type': 'application/json' }, attempts: 1 });
    return (await res.json()) as { fingerprint: string };
  }
}
