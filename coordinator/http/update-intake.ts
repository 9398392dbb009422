import type { Request } from 'express';
import { UPDATE_META_HEADER, UpdateMeta } from '../../protocols/messages.ts';
import { readAllBytes, WeightsCodecError } from '../../protocols/weights-codec.ts';
import { BadRequestError, PayloadTooLargeError } from '../errors.ts';
import { wellFormedStrings } from './middleware.ts';
import { parse } from './validate.ts';

/**
 * The two halves of an update request that are not JSON bodies: the metadata header and the
 * sealed body, streamed and capped.
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
