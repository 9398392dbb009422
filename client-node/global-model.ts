import type { Task } from '../protocols/messages.ts';
import type { TensorSpec, WeightSet } from '../protocols/tensors.ts';
import { verifyArtifact } from '../protocols/crypto/index.ts';
import { decodeWeights, sha256Hex } from '../protocols/weights-codec.ts';
import type { CoordinatorClient } from './coordinator-client.ts';
import type { CoordinatorTrust } from './identity.ts';

/** A global model that is not the task's (hash) or not signed by the trusted coordinator key. */
export class ModelSignatureError extends Error {}

/**
 * The global models a task names: downloaded, checked against the task's hash and the trusted
 * coordinator key (following a verified rotation once if needed), and nothing else is loaded.
 * The model evaluated at the end of round r is the one trained from in round r+1: it is kept
 * (by hash) so it is downloaded and checked once, not twice.
 */
export class GlobalModels {
  private last: { sha256: string; weights: WeightSet } | undefined;

  constructor(
    private readonly client: CoordinatorClient,
    private readonly trust: CoordinatorTrust,
    private readonly specs: TensorSpec[],
  ) {}

  async fetch(task: Task): Promise<WeightSet> {
    if (this.last?.sha256 === task.modelSha256) return this.last.weights;
    const weights = await this.downloadVerified(task);
    this.last = { sha256: task.modelSha256, weights };
    return weights;
  }

  private async downloadVerified(task: Task): Promise<WeightSet> {
    const { bytes, signature } = await this.client.downloadModel(task.studyId, task.modelVersion);
    const sha = sha256Hex(bytes);
    if (sha !== task.modelSha256) throw new ModelSignatureError(`global model v${task.modelVersion} hash ${sha} does not match the task's ${task.modelSha256}; refusing to load it`);
    let verified = signature !== null && (await verifyArtifact(bytes, signature, this.trust.key));
    if (!verified && signature !== null && (await this.trust.followRotations())) verified = await verifyArtifact(bytes, signature, this.trust.key);
    if (!verified) throw new ModelSignatureError(`global model v${task.modelVersion} of study ${task.studyId} is not signed by the coordinator key ${this.trust.fingerprint}; refusing to load it`);
    return decodeWeights(bytes, { expected: this.specs });
  }
}
