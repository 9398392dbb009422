import type { EvaluationReport, Task, UpdateMeta, UpdateReceipt } from '../protocols/messages.ts';
import type { WeightSet } from '../protocols/tensors.ts';
import { encodeWeights } from '../protocols/weights-codec.ts';
import type { CoordinatorClient, SealedUpdate } from './coordinator-client.ts';
import type { CoordinatorTrust } from './identity.ts';
import type { Released } from './release.ts';

/**
 * The seal and send stages: the weights ('update.weights') encoded and encrypted to the trusted
 * coordinator key, signed by this node; then sent with the metadata the release step built
 * (the request signature binds that metadata too). Nothing reaches these but released messages.
 */

export function seal(client: CoordinatorClient, weights: Released<WeightSet>, trust: CoordinatorTrust): Promise<SealedUpdate> {
  return client.seal(encodeWeights(weights), trust.key);
}

/** The update; `evaluation`, when given, rides on the same request (protocols/update-frame.ts). */
/** `waitSeconds` > 0: the answer waits for this node's next task and brings it (CoordinatorClient.submitUpdate). */
export function sendUpdate(client: CoordinatorClient, task: Task, meta: Released<UpdateMeta>, sealed: SealedUpdate, evaluation?: { round: number; report: Released<EvaluationReport> }, waitSeconds = 0): Promise<UpdateReceipt & { nextTask?: Task }> {
  return client.submitUpdate(task.studyId, task.round, meta, sealed, evaluation, waitSeconds);
}

export function sendEvaluation(client: CoordinatorClient, task: Task, report: Released<EvaluationReport>): Promise<void> {
  return client.submitEvaluation(task.studyId, task.round, report);
}
