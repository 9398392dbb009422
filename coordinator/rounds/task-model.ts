import type { Task } from '../../protocols/messages.ts';
import type { ModelSender } from '../http/send-model.ts';
import type { StudyService } from '../studies/study-service.ts';

/** Task.model is left out for a model larger than this (bytes of the binary codec) unless configured otherwise. */
export const DEFAULT_TASK_MODEL_INLINE_BYTES = 256 * 1024;

/** How many encoded models are kept: a round's tasks name one or two versions (fit r-1, an owed evaluation). */
const KEPT = 8;

/**
 * Task.model: a task carries its model (bytes in base64, the coordinator's current signature over
 * them) when the model is at most `maxBytes`, so the node trains without a second signed request
 * for the download (issue 13: one request of ~4 per node and round, each a nonce statement, a
 * signature check and an HTTP exchange on both sides). Nothing is trusted less: the node checks
 * the inline bytes against the task's hash and the coordinator's signature exactly as a download.
 * Larger models (a 1M-parameter one is 4 MB) are downloaded as before, and `maxBytes` 0 turns this
 * off. The base64 text is made once per model and key, not per node.
 *
 * @example
 *   const withModel = createTaskModelInliner({ studies, signatureOf: sendModel.currentSignature, maxBytes: 262144 });
 *   res.json(await withModel(task));
 */
export function createTaskModelInliner(deps: { studies: Pick<StudyService, 'getModel'>; signatureOf: ModelSender['currentSignature']; maxBytes: number }) {
  const encoded = new Map<string, NonNullable<Task['model']>>();

  return async function withModel<T extends Task | Omit<Task, 'config'>>(task: T): Promise<T> {
    if (deps.maxBytes <= 0) return task;
    const stored = await deps.studies.getModel(task.studyId, task.modelVersion);
    if (stored.bytes.byteLength > deps.maxBytes || stored.sha256 !== task.modelSha256) return task;
    const { signature, fingerprint } = await deps.signatureOf(stored);
    const key = `${task.studyId}/${stored.version}/${stored.sha256}/${fingerprint ?? ''}`;
    let model = encoded.get(key);
    if (!model) {
      model = { bytes: Buffer.from(stored.bytes.buffer, stored.bytes.byteOffset, stored.bytes.byteLength).toString('base64'), signature };
      if (encoded.size >= KEPT) encoded.delete(encoded.keys().next().value!);
      encoded.set(key, model);
    }
    return { ...task, model };
  };
}
export type TaskModelInliner = ReturnType<typeof createTaskModelInliner>;
