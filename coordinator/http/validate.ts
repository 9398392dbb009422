import type { z } from 'zod';
import { BadRequestError } from '../errors.ts';

/**
 * Parses with zod and turns the first issue into a 400 naming the field.
 *
 * @example
 *   const { studyId } = parse(StudyParams, req.params, 'params'); // 400 "params.studyId: ..."
 */
export function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = [where, ...issue.path.map(String)].filter(Boolean).join('.');
  throw new BadRequestError(`${field}: ${issue.message}`, field, 'VALIDATION_FAILED');
}
