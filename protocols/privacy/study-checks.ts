import type { StudyConfig } from '../messages.ts';
import { NOISE_MULTIPLIER_FLOOR } from './calibrate.ts';
import { accountedNoiseMultiplier, updateNoiseMultiplier } from './client-level-dp.ts';

/**
 * Checks and warnings on a study's privacy settings that need numbers, not just a schema: pure
 * functions, used by study creation (coordinator), the node before it trains, and the demo.
 *
 * Why delta < 1/n: an (epsilon, delta) guarantee with delta >= 1/n is met by a mechanism that
 * publishes one of the n protected units (a node under client-level DP, a row under DP-SGD) in
 * the clear, chosen at random (Dwork & Roth 2014, sec. 2.3: "name and shame" has delta = 1/n).
 * So delta must be below 1/n, n the number of units the guarantee is about.
 */

/** Nodes a study needs: the most of minNodesPerRound and minNodesToStart. */
export function nodesNeeded(config: Pick<StudyConfig, 'minNodesPerRound' | 'minNodesToStart'>): number {
  return Math.max(config.minNodesPerRound, config.minNodesToStart ?? config.minNodesPerRound);
}

/** Client-level DP: delta must be below 1/(nodes the study needs); null when it is. */
export function clientLevelDeltaProblem(config: StudyConfig): string | null {
  const privacy = config.privacy;
  if (!privacy?.central) return null;
  const n = nodesNeeded(config);
  if (privacy.delta < 1 / n) return null;
  return `delta ${privacy.delta} is not below 1/${n} (the ${n} nodes this study needs: minNodesPerRound ${config.minNodesPerRound}, minNodesToStart ${config.minNodesToStart ?? config.minNodesPerRound}): a mechanism that publishes one node's update in the clear meets (epsilon, delta ${privacy.delta}); use delta below ${(1 / n).toPrecision(3)}, typically at most 1/n^2 = ${(1 / n ** 2).toPrecision(3)}`;
}

/** Record-level DP-SGD: delta must be below 1/rows of the node's data; null when it is (or no DP-SGD). */
export function recordLevelDeltaProblem(config: StudyConfig, rows: number): string | null {
  const privacy = config.privacy;
  if (!privacy?.dpSgd || !Number.isFinite(rows) || rows <= 0) return null;
  if (privacy.delta < 1 / rows) return null;
  return `the study's delta ${privacy.delta} is not below 1/${rows} (this node's ${rows} rows): a mechanism that publishes one row in the clear meets (epsilon, delta ${privacy.delta}), so DP-SGD's epsilon would protect nobody here; the study needs delta below ${(1 / rows).toPrecision(3)}`;
}

/**
 * Will client-level DP noise swamp the federation? The noised mean delta is
 * (sum of k clipped deltas + N(0, (z_delta C)^2 I_d)) / m, m = q x nodes: its noise has norm
 * about z_delta C sqrt(d) / m, while the signal (a mean of deltas clipped to C) has norm at most
 * C. Noise larger than the signal every round and the model does not learn (McMahan et al. 2018
 * needed thousands of users per round). Numbers for the study creator, and for the demo.
 */
export function clientLevelNoiseSwamp(config: StudyConfig, parameters: number): { noiseNorm: number; signalMax: number; expectedNodes: number; message: string } | null {
  const central = config.privacy?.central;
  if (!central) return null;
  const C = central.clipping.kind === 'fixed' ? central.clipping.norm : central.clipping.initialNorm;
  const expectedNodes = central.nodeSamplingRate * nodesNeeded(config);
  const noiseNorm = (updateNoiseMultiplier(central) * C * Math.sqrt(parameters)) / Math.max(1, expectedNodes);
  if (noiseNorm < C) return null;
  const nodes = nodesNeeded(config);
  return {
    noiseNorm,
    signalMax: C,
    expectedNodes,
    message: `client-level DP: noise norm per round ${noiseNorm.toFixed(1)} against a signal of at most ${C.toFixed(1)} (clip norm; z ${central.noiseMultiplier}, ${parameters} parameters, ${expectedNodes.toFixed(1)} expected nodes per round): the model will not learn with ${nodes} nodes; it would need about ${Math.ceil((updateNoiseMultiplier(central) * Math.sqrt(parameters)) / central.nodeSamplingRate)} nodes; use record-level DP (DP-SGD) for few partners`,
  };
}

/** Every privacy warning of a study at creation (the POST response's `warnings`). */
export function privacyWarnings(config: StudyConfig, parameters: number): string[] {
  const warnings: string[] = [];
  const swamp = clientLevelNoiseSwamp(config, parameters);
  if (swamp) warnings.push(swamp.message);
  const central = config.privacy?.central;
  if (central && central.clipping.kind === 'adaptive') {
    const charged = accountedNoiseMultiplier(central);
    warnings.push(
      `adaptive clipping: the ledger charges noise multiplier ${charged.toFixed(3)}, not ${central.noiseMultiplier}: the count of unclipped updates is released with noise ${central.clipping.countNoiseStd} and sensitivity 1 (the number of contributors is published)${charged < NOISE_MULTIPLIER_FLOOR ? `; that is below the floor ${NOISE_MULTIPLIER_FLOOR}, so the epsilon grows fast: raise countNoiseStd` : ''}`,
    );
  }
  return warnings;
}
