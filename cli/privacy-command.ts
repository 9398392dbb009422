/**
 * `fedmark privacy ...`: the privacy accountants on the command line.
 *
 *   fedmark privacy epsilon --q Q --sigma S --steps T --delta D [--accountant rdp|pld] [--rdp-series exact|dp_accounting-0.6.0] [--json]
 *   fedmark privacy sigma   --q Q --steps T --delta D --epsilon E [--accountant rdp|pld] [--rdp-series ...] [--json]
 *
 * JSON output: `epsilon` is a number, or null with `unbounded: true` when no finite epsilon can be
 * certified (JSON has no Infinity). `accountant` names the accountant whose bound is reported: with
 * --accountant pld that is RDP when RDP's bound is the smaller (then `note` says why), and
 * `requestedAccountant` is what was asked for. `rdpSeries` is the RDP fractional-order series used.
 *
 * Option values are validated (and coerced from strings) with zod; a bad or missing value prints
 * one message naming the option to stderr and exits with code 2 (through commander's
 * `command.error`, so `exitOverride()` turns it into a CommanderError in tests and embedders).
 */

import type { Command } from 'commander';
import { z } from 'zod';
import { calibrateSigma, computeEpsilonDetails, PrivacyParameterError } from '../protocols/privacy/index.ts';

const INVALID_OPTION = 'fedmark.privacy.invalidOption';

/** A number given as a string; blank strings are not 0 (Number('') would be). */
const numberOption = () => z.preprocess((v) => (typeof v === 'string' && v.trim() === '' ? Number.NaN : v), z.coerce.number({ error: 'must be a number' }));

const common = {
  q: numberOption().pipe(z.number().min(0, 'must be in [0, 1]').max(1, 'must be in [0, 1]')),
  steps: numberOption().pipe(z.number().int('must be an integer >= 0').min(0, 'must be an integer >= 0')),
  delta: numberOption().pipe(z.number().gt(0, 'must be in (0, 1)').lt(1, 'must be in (0, 1)')),
  accountant: z.enum(['rdp', 'pld'], { error: "must be 'rdp' or 'pld'" }).default('rdp'),
  rdpSeries: z.enum(['exact', 'dp_accounting-0.6.0'], { error: "must be 'exact' or 'dp_accounting-0.6.0'" }).default('exact'),
  json: z.boolean().default(false),
};

const EpsilonOptions = z.object({
  ...common,
  sigma: numberOption().pipe(z.number().gt(0, 'must be > 0')),
});

const SigmaOptions = z.object({
  ...common,
  epsilon: numberOption().pipe(z.number().gt(0, 'must be > 0')),
});

const REQUIRED = {
  epsilon: ['q', 'sigma', 'steps', 'delta'],
  sigma: ['q', 'steps', 'delta', 'epsilon'],
} as const;

/** Fails the command with exit code 2 and a message naming the option. */
function fail(command: Command, option: string, message: string | null): never {
  const text = message === null ? `error: missing required option --${option}` : `error: invalid option --${option}: ${message}`;
  command.error(text, { exitCode: 2, code: INVALID_OPTION });
  // command.error does not return (it exits or, with exitOverride, throws).
  throw new Error('unreachable');
}

function parseOptions<T extends z.ZodType>(command: Command, schema: T, raw: Record<string, unknown>, required: readonly string[]): z.output<T> {
  for (const key of required) {
    if (raw[key] === undefined) fail(command, key, null);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = String(issue.path[0] ?? '');
    const given = raw[key];
    // commander camel-cases option names (--rdp-series -> rdpSeries); name the flag as typed.
    fail(command, key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), `${issue.message}${given === undefined ? '' : ` (got ${JSON.stringify(given)})`}`);
  }
  return parsed.data;
}

/** Runs an accountant call, turning its parameter errors into option errors. */
function guarded<T>(command: Command, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof PrivacyParameterError) fail(command, error.parameter ?? 'value', error.message);
    throw error;
  }
}

function show(x: number, digits = 6): string {
  return Number.isFinite(x) ? String(Number(x.toPrecision(digits))) : String(x);
}

/** JSON has no Infinity: an unbounded epsilon is null, flagged. */
function jsonEpsilon(field: string, epsilon: number): Record<string, unknown> {
  return Number.isFinite(epsilon) ? { [field]: epsilon } : { [field]: null, unbounded: true };
}

const RDP_SERIES_HELP =
  "RDP fractional-order series: exact (default) or dp_accounting-0.6.0 (Google dp_accounting 0.6.0's absolute-value series: a looser bound, to reproduce its numbers)";

function writeLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

export function registerPrivacyCommands(program: Command): void {
  const privacy = program
    .command('privacy')
    .description('differential-privacy accounting for the Poisson-subsampled Gaussian mechanism (add/remove-one adjacency)');

  privacy
    .command('epsilon')
    .description('epsilon of (epsilon, delta)-DP after --steps steps with sampling rate --q and noise multiplier --sigma')
    .option('--q <q>', 'Poisson sampling rate in [0, 1] (1: every record/client in every step)')
    .option('--sigma <sigma>', 'noise multiplier: Gaussian noise std / clipping norm (> 0)')
    .option('--steps <steps>', 'number of steps (integer >= 0)')
    .option('--delta <delta>', 'delta in (0, 1)')
    .option('--accountant <name>', 'rdp (Renyi DP, default) or pld (privacy loss distribution, tighter; RDP answers where its bound is smaller)')
    .option('--rdp-series <series>', RDP_SERIES_HELP)
    .option('--json', 'print one line of JSON')
    .action((raw: Record<string, unknown>, command: Command) => {
      const opts = parseOptions(command, EpsilonOptions, raw, REQUIRED.epsilon);
      const { q, sigma, steps, delta, accountant, rdpSeries } = opts;
      const result = guarded(command, () => computeEpsilonDetails({ q, sigma, steps, delta }, accountant, { rdpSeries }));
      const { epsilon } = result;
      if (opts.json) {
        writeLine(
          JSON.stringify({
            ...jsonEpsilon('epsilon', epsilon),
            accountant: result.accountant,
            requestedAccountant: result.requested,
            rdpSeries,
            ...(result.note ? { note: result.note } : {}),
            q,
            sigma,
            steps,
            delta,
          }),
        );
      } else {
        const series = rdpSeries === 'exact' ? '' : `, RDP series ${rdpSeries}`;
        writeLine(
          `epsilon = ${Number.isFinite(epsilon) ? show(epsilon) : 'unbounded (Infinity)'} (${result.accountant} accountant${series}, q=${q}, sigma=${sigma}, steps=${steps}, delta=${delta})`,
        );
        if (result.note) writeLine(`note: ${result.note}`);
      }
    });

  privacy
    .command('sigma')
    .description('smallest noise multiplier sigma such that --steps steps with sampling rate --q are (--epsilon, --delta)-DP')
    .option('--q <q>', 'Poisson sampling rate in [0, 1]')
    .option('--steps <steps>', 'number of steps (integer >= 0)')
    .option('--delta <delta>', 'delta in (0, 1)')
    .option('--epsilon <epsilon>', 'target epsilon (> 0)')
    .option('--accountant <name>', 'rdp (Renyi DP, default) or pld (privacy loss distribution, tighter; RDP answers where its bound is smaller)')
    .option('--rdp-series <series>', RDP_SERIES_HELP)
    .option('--json', 'print one line of JSON')
    .action((raw: Record<string, unknown>, command: Command) => {
      const opts = parseOptions(command, SigmaOptions, raw, REQUIRED.sigma);
      const { q, steps, delta, epsilon, accountant, rdpSeries } = opts;
      const sigma = guarded(command, () => calibrateSigma({ q, steps, delta, epsilon, accountant, rdpSeries }));
      // The epsilon actually reached at that sigma (<= the target); 0 when no noise is needed.
      const achieved =
        sigma > 0
          ? guarded(command, () => computeEpsilonDetails({ q, sigma, steps, delta }, accountant, { rdpSeries }))
          : { epsilon: 0, accountant, requested: accountant, note: undefined };
      if (opts.json) {
        writeLine(
          JSON.stringify({
            sigma,
            accountant: achieved.accountant,
            requestedAccountant: accountant,
            rdpSeries,
            ...(achieved.note ? { note: achieved.note } : {}),
            q,
            steps,
            delta,
            epsilon,
            ...jsonEpsilon('achievedEpsilon', achieved.epsilon),
          }),
        );
      } else {
        const series = rdpSeries === 'exact' ? '' : `, RDP series ${rdpSeries}`;
        writeLine(
          `sigma = ${show(sigma)} (noise multiplier for epsilon <= ${epsilon} at delta=${delta}; ${achieved.accountant} accountant${series}, q=${q}, steps=${steps}; achieved epsilon = ${show(achieved.epsilon, 8)})`,
        );
        if (achieved.note) writeLine(`note: ${achieved.note}`);
      }
    });
}
