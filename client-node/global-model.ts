import { DEFAULT_MAX_ABS_WEIGHT, type Task } from '../protocols/messages.ts';
import { modelOutOfRange } from '../protocols/model-bounds.ts';
import type { TensorSpec, WeightSet } from '../protocols/tensors.ts';
import { verifyArtifact } from '../protocols/crypto/index.ts';
import { decodeWeights, sha256Hex, WeightsCodecError } from '../protocols/weights-codec.ts';
import type { CoordinatorClient } from './coordinator-client.ts';
import type { CoordinatorTrust } from './identity.ts';

/** A global model that is not the task's (hash) or not signed by the trusted coordinator key. */
export class ModelSignatureError extends Error {}

/**
 * A verified (hash and signature) global model the node will not load: a non-finite weight or
 * one above the study's bounds.maxAbsWeight. A signature says who published a model, not that it
 * is sane: a compromised or buggy coordinator could sign weights of 1e37, and training from them
 * only diverges. The node reports `model-rejected` with this message.
 */
export class ModelRejectedError extends Error {}

/**
 * The global models a task names: carried by the task (Task.model) or downloaded, checked against the task's hash and the trusted
 * coordinator key (following a verified rotation once if needed), and nothing else is loaded.
 * The model evaluated at the end of round r is the one trained from in round r+1: it is kept
 * (by hash) so it is downloaded and checked once, not twice.
 */
export class GlobalModels {
  private last: { sha256: string; weights: WeightSet } | undefined;
  /** Models refused by hash, with the reason: the same task asked again is refused without a download. */
  private readonly rejected = new Map<string, string>();

  constructor(
    private readonly client: CoordinatorClient,
    private readonly trust: CoordinatorTrust,
    private readonly specs: TensorSpec[],
  ) {}

  async fetch(task: Task): Promise<WeightSet> {
    if (this.last?.sha256 === task.modelSha256) return this.last.weights;
    const known = this.rejected.get(task.modelSha256);
    if (known) throw new ModelRejectedError(known);
    let weights: WeightSet;
    try {
      weights = await this.downloadVerified(task);
      const maxAbs = task.config.bounds?.maxAbsWeight ?? DEFAULT_MAX_ABS_WEIGHT;
      const problem = modelOutOfRange(weights, maxAbs);
      if (problem) throw new ModelRejectedError(`global model v${task.modelVersion} is signed but out of range: ${problem} (max |w| ${maxAbs}); refusing to load it`);
    } catch (err) {
      if (err instanceof ModelRejectedError) this.rejected.set(task.modelSha256, err.message);
      throw err;
    }
    this.last = { sha256: task.modelSha256, weights };
    return weights;
  }

  /** The task's own copy of its model (Task.model) when it carries one, else a download: checked the same way. */
  private async received(task: Task): Promise<{ bytes: Uint8Array; signature: string | null }> {
    if (!task.model) return this.client.downloadModel(task.studyId, task.modelVersion);
    return { bytes: Buffer.from(task.model.bytes, 'base64'), signature: task.model.signature };
  }

  private async downloadVerified(task: Task): Promise<WeightSet> {
    const { bytes, signature } = await this.received(task);
    const sha = sha256Hex(bytes);
    if (sha !== task.modelSha256) throw new ModelSignatureError(`global model v${task.modelVersion} hash ${sha} does not match the task's ${task.modelSha256}; refusing to load it`);
    let verified = signature !== null && (await verifyArtifact(bytes, signature, this.trust.key));
    if (!verified && signature !== null && (await this.trust.followRotations())) verified = await verifyArtifact(bytes, signature, this.trust.key);
    if (!verified) throw new ModelSignatureError(`global model v${task.modelVersion} of study ${task.studyId} is not signed by the coordinator key ${this.trust.fingerprint}; refusing to load it`);
    try {
      return decodeWeights(bytes, { expected: this.specs });
    } catch (err) {
      // Signed but unreadable (a non-finite value, the wrong tensors): refused like an absurd one.
      if (err instanceof WeightsCodecError) throw new ModelRejectedError(`global model v${task.modelVersion} is signed but cannot be loaded: ${err.message}`);
      throw err;
    }
  }
}
