import type { Request } from 'express';
import { UPDATE_META_HEADER, UpdateMeta } from '../../protocols/messages.ts';
import { unframeUpdate, UPDATE_WITH_EVALUATION_TYPE, UpdateEvaluation, UpdateFrameError } from '../../protocols/update-frame.ts';
import { readAllBytes, WeightsCodecError } from '../../protocols/weights-codec.ts';
import { BadRequestError, PayloadTooLargeError } from '../errors.ts';
import { parseWellFormedJson, wellFormedStrings } from './middleware.ts';
import { parse } from './validate.ts';

/**
 * The parts of an update request that are not JSON bodies: the metadata header, the sealed body
 * (streamed and capped), and the evaluation that may ride on it (protocols/update-frame.ts).
 *
 * @example
 *   const { meta, header } = updateMetaOf(req);
 *   const sealed = await readSealedBody(req, await studies.maxUpdateBytes(studyId));
 */
export function updateMetaOf(req: Request): { meta: UpdateMeta; header: string } {
  const field = `headers.${UPDATE_META_HEADER}`;
  const header = req.get(UPDATE_META_HEADER);
  if (!header) throw new BadRequestError(`missing ${UPDATE_META_HEADER} header (JSON: numExamples, loss, steps, trainSeconds, data)`, field, 'VALIDATION_FAILED');
  let json: unknown;
  try {
    // The same string check as JSON bodies: the metadata is stored as jsonb.
    json = JSON.parse(header, wellFormedStrings);
  } catch {
    throw new BadRequestError(`${UPDATE_META_HEADER} header is not valid JSON (or holds a NUL or an unpaired surrogate)`, field, 'VALIDATION_FAILED');
  }
  return { meta: parse(UpdateMeta, json, field), header };
}

/** The whole body, at most `maxBytes` (413 beyond); a body cut short is a 400 and nothing is stored. */
export async function readSealedBody(req: Request, maxBytes: number): Promise<Uint8Array> {
  try {
    return await readAllBytes(req, maxBytes);
  } catch (err) {
    if (err instanceof WeightsCodecError) throw new PayloadTooLargeError(`update body is larger than this study's model (${maxBytes} bytes at most)`);
    // The client went away or the connection broke mid-body: nothing was stored.
    throw new BadRequestError(`update body could not be read to its end (${err instanceof Error ? err.message : String(err)}); nothing was stored`, 'body', 'INCOMPLETE_BODY');
  }
}

/** Whether the body is framed with an evaluation (UPDATE_WITH_EVALUATION_TYPE) rather than a bare sealed update. */
export function carriesEvaluation(req: Request): boolean {
  return (req.get('content-type') ?? '').split(';')[0].trim().toLowerCase() === UPDATE_WITH_EVALUATION_TYPE;
}

/**
 * The evaluation part of a framed body, checked as the evaluation route checks its JSON body, and
 * the sealed update beside it (at most `maxSealedBytes`, as a bare one). It must evaluate the fit round's starting model: round `round - 1`.
 * Anything malformed is a 400 for the whole request; nothing is stored.
 */
export function evaluationPartOf(body: Uint8Array, round: number, maxSealedBytes: number): { evaluation: UpdateEvaluation; sealed: Uint8Array } {
  let split;
  try {
    split = unframeUpdate(body);
  } catch (err) {
    if (err instanceof UpdateFrameError) throw new BadRequestError(`update refused: ${err.message}`, 'body', 'VALIDATION_FAILED');
    throw err;
  }
  // The frame's allowance is for the evaluation: the sealed part has the study's own limit.
  if (split.sealed.length > maxSealedBytes) throw new PayloadTooLargeError(`update body is larger than this study's model (${maxSealedBytes} bytes at most)`);
  let json: unknown;
  try {
    // Not a reviver: called for each of a report's ~2000 histogram counts, it cost ~1.6 ms an evaluation.
    json = parseWellFormedJson(split.evaluation);
  } catch {
    throw new BadRequestError('update refused: its evaluation part is not valid JSON (or holds a NUL or an unpaired surrogate)', 'body.evaluation', 'VALIDATION_FAILED');
  }
  const evaluation = parse(UpdateEvaluation, json, 'body.evaluation');
  if (evaluation.round !== round - 1) throw new BadRequestError(`update refused: the evaluation riding on round ${round}'s update must be of round ${round - 1} (its starting model), not ${evaluation.round}`, 'body.evaluation.round', 'VALIDATION_FAILED');
  return { evaluation, sealed: split.sealed };
}
