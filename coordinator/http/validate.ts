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
    app.param(name, (req: Request, res: Response, next: NextFunction, value: unknown) => {
      try {
        parse(schema, value, `params.${name}`);
      } catch (err) {
        next(err);
        return;
      }
      const then = after[name];
      if (!then) next();
      else then(req, res, String(value)).then(() => next(), next);
    });
  }
}
