import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { CoordinatorClient, CoordinatorRefusal } from '../../client-node/coordinator-client.ts';
import type { NodeConfig } from '../../client-node/config.ts';
import { GlobalModels } from '../../client-node/global-model.ts';
import { CoordinatorTrust, loadIdentity, loadOrEnroll } from '../../client-node/identity.ts';
import { Release } from '../../client-node/release.ts';
import { seal, sendEvaluation, sendUpdate } from '../../client-node/send.ts';
import { pause, pollTask } from '../../client-node/task.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';
import type { StudyConfig, Task } from '../../protocols/messages.ts';
import { DEFAULT_HISTOGRAM_BINS } from '../../protocols/metrics.ts';
import { modelKind } from '../../protocols/model-kinds/kind.ts';
import { modelTensorSpecs } from '../../protocols/model-spec.ts';
import { examplesOf, ExpectedMean, pseudoUpdate, type Patterns } from './pseudo-update.ts';

/**
 * A simulated node: everything a real node does on the wire, through the node's own code (its
 * OpenPGP identity, the real enrollment with a one-time token, the pinned coordinator key, signed
 * requests, the release step, sealed updates, verified signed global models), except training:
 * its update is the deterministic pseudo-update of pseudo-update.ts. Many run in one process.
 */

export const SIM_JURISDICTION = 'US-CA-CCPA';
const SIM_LOG = pino({ level: 'silent' });

/** What the simulated nodes of one run share: the patterns, the expected means, a limit on concurrent fits. */
export interface Simulation {
  patterns: Patterns;
  parameters: number;
  /** Per round: the expected FedAvg, accumulated from the updates as they are sent. */
  expected: Map<number, ExpectedMean>;
  /** Per round: the comparison of the published model with the expected FedAvg (by node 0). */
  checks: Map<number, { maxAbsError: number; maxUlpError: number; violations: number; updates: number }>;
  /** Per round: when the first fit task reached a node and the last evaluation was accepted (ms since the epoch). */
  events: Map<number, { firstTask: number; lastEvaluation: number }>;
  /** At most this many nodes build, seal and send an update at once (the process's memory). */
  fitSlots: Semaphore;
  /** Task polls that got no answer (timeouts, refused connections): the node waited 5 s and asked again. */
  unreachable: number;
  /** Tasks that failed without a refusal (timeouts) and were taken again. */
  taskErrors: string[];
  /** Told of each task that carried its model (Task.model: a small model, not downloaded). */
  onModelInTask?: (task: Task) => void;
  signal: AbortSignal;
}

export class Semaphore {
  private waiting: Array<() => void> = [];
  constructor(private free: number) {}
  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

const dataReport = (rows: number) => ({ rows, missingFilled: {}, unseenCategories: {} });

export class SimNode {
  /** Rounds whose update this node added to the expected mean. */
  private readonly counted = new Set<number>();

  private constructor(
    readonly index: number,
    private readonly client: CoordinatorClient,
    private readonly trust: CoordinatorTrust,
    private readonly globals: GlobalModels,
    private readonly sim: Simulation,
  ) {}

  /** Identity, enrollment with `token` (client-node/identity.ts), the pinned key, then `ready` with its declared rows. */
  static async enroll(sim: Simulation, coordinator: string, stateDir: string, index: number, token: string, study: StudyConfig): Promise<SimNode> {
    mkdirSync(stateDir, { recursive: true });
    const config = { coordinator, token, stateDir, keyPassphrase: 'scale-bench-node-passphrase' } as NodeConfig;
    const client = new CoordinatorClient(coordinator);
    const identity = await loadIdentity(config);
    const credentials = await loadOrEnroll(config, client, SIM_LOG, identity.publicKeyArmored, SIM_JURISDICTION);
    client.authenticate(credentials.apiKey, identity.privateKey);
    const trust = await CoordinatorTrust.pinned(credentials, client, stateDir, SIM_LOG);
    const specs = modelKind(study.task.kind).sharedTensors(modelTensorSpecs(study.model, encodedWidth(study.features)));
    const node = new SimNode(index, client, trust, new GlobalModels(client, trust, specs), sim);
    await client.reportStatus(Release.of(study).status({ state: 'ready', data: dataReport(node.rows) }));
    return node;
  }

  /** Declared rows: the training rows plus a validation share. */
  private get rows() {
    return Math.ceil(examplesOf(this.index) * 1.25);
  }

  /** Polls tasks and answers them until the simulation is aborted; any failure ends the run. */
  async run(pollSeconds: number): Promise<void> {
    while (!this.sim.signal.aborted) {
      // As a real node: a coordinator that does not answer (busy, restarting) is asked again in 5 s (client-node/task.ts).
      const next = await pollTask(this.client, pollSeconds, SIM_LOG);
      if (this.sim.signal.aborted) return;
      if ('unreachable' in next) {
        this.sim.unreachable++;
        await pause(5000, this.sim.signal);
        continue;
      }
      if ('none' in next) continue;
      const { task } = next;
      const seen = this.sim.events.get(task.round) ?? { firstTask: Date.now(), lastEvaluation: 0 };
      this.sim.events.set(task.round, seen);
      try {
        if (task.kind === 'fit') await this.sim.fitSlots.run(() => this.fit(task));
        else {
          await this.evaluate(task);
          seen.lastEvaluation = Math.max(seen.lastEvaluation, Date.now());
        }
      } catch (err) {
        // A refusal is a broken protocol or a wrong update: the run fails. Anything else (a
        // download or upload cut by its timeout on a saturated machine) is what a real node
        // survives: it waits and takes the task again (client-node/node-runner.ts).
        if (err instanceof CoordinatorRefusal || this.sim.signal.aborted) throw err;
        this.sim.taskErrors.push(`${task.kind} round ${task.round}: ${err instanceof Error ? err.message : String(err)}`);
        await pause(2000, this.sim.signal);
      }
    }
  }

  /** The pseudo-update of the verified global model, through release, seal and send. */
  private async fit(task: Task) {
    if (task.model) this.sim.onModelInTask?.(task);
    const global = await this.globals.fetch(task);
    const update = pseudoUpdate(global, this.sim.patterns, this.index, task.round);
    const numExamples = examplesOf(this.index);
    let expected = this.sim.expected.get(task.round);
    if (!expected) this.sim.expected.set(task.round, (expected = new ExpectedMean(this.sim.parameters)));
    const release = Release.of(task.config);
    const meta = release.update({ numExamples, loss: 0.5, steps: 1, trainSeconds: 0, data: dataReport(this.rows) });
    const sealed = await seal(this.client, release.weights(update), this.trust);
    // Counted before it is sent (node 0 may check the model before this send's answer arrives),
    // once per round: a send cut by a timeout is retried with the same deterministic update.
    if (!this.counted.has(task.round)) expected.add(update, numExamples);
    this.counted.add(task.round);
    await sendUpdate(this.client, task, meta, sealed);
  }

  /** Downloads and verifies the new model (node 0 also checks it against the expected FedAvg), then a fixed evaluation report. */
  private async evaluate(task: Task) {
    if (task.model) this.sim.onModelInTask?.(task);
    const model = await this.globals.fetch(task);
    if (this.index === 0) {
      const expected = this.sim.expected.get(task.round);
      if (!expected) throw new Error(`round ${task.round}: an evaluation task before any update was sent`);
      this.sim.checks.set(task.round, { ...expected.compare(model), updates: expected.updates });
      this.sim.expected.delete(task.round);
    }
    // 20 validation rows, scores spread over the histogram (DEFAULT_HISTOGRAM_BINS): inside every node's validation share.
    const bins = DEFAULT_HISTOGRAM_BINS;
    const positives = new Array<number>(bins).fill(0);
    const negatives = new Array<number>(bins).fill(0);
    for (let k = 0; k < 10; k++) {
      positives[Math.floor(((k + 5) / 15) * bins)]++;
      negatives[Math.floor((k / 15) * bins)]++;
    }
    const report = { numExamples: 20, loss: 0.5, stats: { kind: 'binary' as const, histogram: { bins, positives, negatives }, brierSum: 4, logLossSum: 10 } };
    await sendEvaluation(this.client, task, Release.of(task.config).evaluation(report));
  }
}

/** A node's state folder under the run's directory. */
export const nodeStateDir = (dir: string, index: number) => join(dir, 'nodes', `node-${String(index).padStart(3, '0')}`);
