import { z } from 'zod';
import { NOISE_MULTIPLIER_FLOOR, NOISE_MULTIPLIER_FLOOR_REASON } from './calibrate.ts';
import { ClientLevelDpConfig } from './client-level-dp.ts';

/** A study's noise multiplier: finite and at least the floor (calibrate.ts says why). */
const FlooredNoiseMultiplier = z
  .number()
  .finite()
  .min(NOISE_MULTIPLIER_FLOOR, { message: `noiseMultiplier must be at least ${NOISE_MULTIPLIER_FLOOR}: ${NOISE_MULTIPLIER_FLOOR_REASON}` });

/**
 * A study's privacy configuration: which mechanisms run, their parameters, the accountant, and
 * the study's total budget. Everything here goes into each round's record.
 */
export const CentralDpConfig = ClientLevelDpConfig.extend({
  noiseMultiplier: FlooredNoiseMultiplier,
  /** Poisson sampling rate of nodes per round (each ready node is selected with this probability). */
  nodeSamplingRate: z.number().gt(0).max(1).default(1),
});
export type CentralDpConfig = z.infer<typeof CentralDpConfig>;

/** Record-level DP-SGD run by each node on its own rows (Abadi et al. 2016). */
export const DpSgdConfig = z.object({
  noiseMultiplier: FlooredNoiseMultiplier,
  /** Per-example gradient L2 clip norm. */
  clipNorm: z.number().positive().finite(),
  /** Poisson sampling rate of examples per step; expected batch = rate x rows. */
  samplingRate: z.number().gt(0).max(1),
  /** Steps per round; default: one epoch in expectation (1 / samplingRate). */
  stepsPerRound: z.number().int().positive().max(1_000_000).optional(),
  learningRate: z.number().positive().max(100).default(0.1),
});
export type DpSgdConfig = z.infer<typeof DpSgdConfig>;

export const StudyPrivacy = z
  .object({
    accountant: z.enum(['rdp', 'pld']).default('rdp'),
    delta: z.number().gt(0).lt(1).default(1e-5),
    /** Total client-level epsilon the study may spend; a round that would exceed it is refused. */
    budgetEpsilon: z.number().positive().finite().optional(),
    central: CentralDpConfig.optional(),
    dpSgd: DpSgdConfig.optional(),
  })
  .refine((p) => p.budgetEpsilon === undefined || p.central !== undefined, {
    message: 'a study budget (budgetEpsilon) needs central DP: without it the coordinator cannot account client-level epsilon',
    path: ['budgetEpsilon'],
  });
export type StudyPrivacy = z.infer<typeof StudyPrivacy>;

/** Steps of DP-SGD one round takes on a node. */
export function dpSgdStepsPerRound(config: DpSgdConfig): number {
  return config.stepsPerRound ?? Math.max(1, Math.round(1 / config.samplingRate));
}
