import { z } from 'zod';
import { EvaluationReport } from './messages.ts';

/**
 * An update request that also carries the node's evaluation of the previous round's model
 * (evaluationSchedule 'with-next-fit', Task.evaluate.withUpdate): one signed request a round where
 * there were two (issue 13: each request is a nonce statement, a signature check, a transaction and
 * an HTTP exchange on both sides).
 *
 * Body, under content type UPDATE_WITH_EVALUATION_TYPE:
 *   four-octet big-endian length n | n octets of UTF-8 JSON, an UpdateEvaluation | the sealed update
 * The request signature covers the whole body (its SHA-256), so the evaluation is signed with the
 * update it rides on; the sealed part is the same OpenPGP message a plain update sends.
 *
 * @example
 *   const body = frameUpdate(JSON.stringify({ round: 3, report }), sealed);
 *   const { evaluation, sealed } = unframeUpdate(body); // UpdateFrameError when malformed
 */
export const UPDATE_TYPE = 'application/pgp-encrypted';
export const UPDATE_WITH_EVALUATION_TYPE = 'application/vnd.fedmark.update+evaluation';

/** The evaluation part's ceiling: the evaluation route's own JSON body limit (1 MB). */
export const MAX_EVALUATION_PART_BYTES = 1024 * 1024;

/** The evaluation part: which round it evaluates (the fit round's starting model), and the report. */
export const UpdateEvaluation = z.strictObject({ round: z.number().int().positive(), report: EvaluationReport });
export type UpdateEvaluation = z.infer<typeof UpdateEvaluation>;

/** A framed body that cannot be split: the request is refused whole, nothing is stored. */
export class UpdateFrameError extends Error {}

export function frameUpdate(evaluationJson: string, sealed: Uint8Array): Uint8Array {
  const evaluation = Buffer.from(evaluationJson, 'utf8');
  if (evaluation.length > MAX_EVALUATION_PART_BYTES) throw new UpdateFrameError(`evaluation part of ${evaluation.length} bytes is over ${MAX_EVALUATION_PART_BYTES}`);
  const body = new Uint8Array(4 + evaluation.length + sealed.length);
  new DataView(body.buffer).setUint32(0, evaluation.length);
  body.set(evaluation, 4);
  body.set(sealed, 4 + evaluation.length);
  return body;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The evaluation JSON text and a view of the sealed update (not copied). */
export function unframeUpdate(body: Uint8Array): { evaluation: string; sealed: Uint8Array } {
  if (body.length < 4) throw new UpdateFrameError(`framed update body of ${body.length} bytes has no evaluation length`);
  const length = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(0);
  if (length > MAX_EVALUATION_PART_BYTES) throw new UpdateFrameError(`evaluation part claims ${length} bytes, over ${MAX_EVALUATION_PART_BYTES}`);
  if (4 + length > body.length) throw new UpdateFrameError(`evaluation part claims ${length} bytes but the body has ${body.length - 4} after the length`);
  let evaluation: string;
  try {
    evaluation = utf8.decode(body.subarray(4, 4 + length));
  } catch {
    throw new UpdateFrameError('evaluation part is not valid UTF-8');
  }
  return { evaluation, sealed: body.subarray(4 + length) };
}
