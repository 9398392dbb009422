import type { Express, NextFunction, Request, Response } from 'express';
import { z } from 'zod';
import { Id } from '../../protocols/messages.ts';
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

/** The largest value of a PostgreSQL `integer` column: rounds and versions are stored in one. */
export const MAX_INT32 = 2 ** 31 - 1;

/**
 * A whole number in a path or query string, written plainly (no sign, exponent, hex, spaces or
 * fraction, which Number() would accept) and within [min, max]: "2147483648" is a 400 naming the
 * field, not a database overflow (a 500).
 */
export const intParam = (min: number, max = MAX_INT32) =>
  z
    .string()
    .regex(/^[0-9]{1,16}$/, 'must be a whole number written in decimal digits')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

/** A region name in a path: printable, no control characters (a NUL would reach the database). */
export const RegionParam = z.string().min(1).max(100).regex(/^[^\p{Cc}\p{Cs}]+$/u, 'must not contain control characters');
export const RoundParam = intParam(1);
export const VersionParam = intParam(0);

/**
 * Every route parameter of the app, by name, with its schema. `registerParamValidators` checks
 * each one before any route handler runs (and before the body is read), and the route fuzz test
 * fails when a route uses a parameter that is not listed here.
 */
export const ROUTE_PARAMS: Record<string, z.ZodType> = { studyId: Id, nodeId: Id, id: Id, round: RoundParam, version: VersionParam, region: RegionParam };

/** How many valid values of each parameter are remembered (only valid ones: each is bounded by its schema). */
const VALID_PARAMS_KEPT = 4096;

/**
 * Registers one express param callback per name in ROUTE_PARAMS: a malformed id or number in any
 * route's path is a 400 naming `params.<name>`. `after` (optional) runs next for a valid value
 * (the study access check of auth/study-access.ts for `studyId`).
 *
 * @example
 *   registerParamValidators(app, { studyId: studyAccess });
 */
export function registerParamValidators(app: Express, after: Record<string, (req: Request, res: Response, value: string) => Promise<void>> = {}) {
  for (const [name, schema] of Object.entries(ROUTE_PARAMS)) {
    // Values already found valid (a schema's verdict on a string never changes): every node
    // request names the same study and round, and zod's parse of them was ~70 ms of the demo
    // coordinator's CPU (issue 13). Bounded: emptied when full.
    const valid = new Set<string>();
    app.param(name, (req: Request, res: Response, next: NextFunction, value: unknown) => {
      if (typeof value !== 'string' || !valid.has(value)) {
        try {
          parse(schema, value, `params.${name}`);
        } catch (err) {
          next(err);
          return;
        }
        if (typeof value === 'string') {
          if (valid.size >= VALID_PARAMS_KEPT) valid.clear();
          valid.add(value);
        }
      }
      const then = after[name];
      if (!then) next();
      else then(req, res, String(value)).then(() => next(), next);
    });
  }
}
