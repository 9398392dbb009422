import { describe, expect, it } from 'vitest';
import { StudyConfig, type StudyConfigInput } from '../../../protocols/messages.ts';
import { ClientLevelDpStrategy } from '../../../protocols/privacy/client-level-dp.ts';
import { createStrategy, minimumUpdates, STRATEGY_NAMES, StrategyConfig } from '../../../protocols/strategies/index.ts';

/** A minimal valid study (binary target, one numeric feature). */
const study = (overrides: Partial<StudyConfigInput> = {}): StudyConfigInput => ({
  name: 'strategies',
  model: { kind: 'logreg' },
  features: { target: { column: 'y', positive: '1' }, features: [{ name: 'a', kind: 'numeric', mean: 0, std: 1, fill: 0 }] },
  rounds: 3,
  minNodesPerRound: 3,
  ...overrides,
});
const central = { central: { noiseMultiplier: 1, clipping: { kind: 'fixed' as const, norm: 1 } } };

/** The issues' paths, joined with dots. */
function issuePaths(input: StudyConfigInput): string[] {
  const result = StudyConfig.safeParse(input);
  expect(result.success).toBe(false);
  return result.error!.issues.map((i) => i.path.join('.'));
}

describe('strategy config (zod)', () => {
  it('the fixture is valid, and every strategy name parses with its defaults', () => {
    expect(StudyConfig.parse(study()).strategy).toEqual({ name: 'fedavg' });
    for (const name of STRATEGY_NAMES) {
      // Krum's default f = 1 needs 2f + 3 = 5 nodes a round; trimmed mean's 0.1 trims one at 10.
      const parsed = StudyConfig.parse(study({ strategy: { name } as StudyConfigInput['strategy'], minNodesPerRound: 10 }));
      expect(parsed.strategy.name).toBe(name);
      expect(createStrategy(parsed).name).toBe(name);
    }
    expect(StrategyConfig.parse({ name: 'fedadam' })).toEqual({ name: 'fedadam', serverLearningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
  });

  it('a bad parameter gives an issue naming its field path', () => {
    expect(issuePaths(study({ strategy: { name: 'fedprox', mu: -0.1 } }))).toContain('strategy.mu');
    expect(issuePaths(study({ strategy: { name: 'trimmed-mean', trimFraction: 0.5 } }))).toContain('strategy.trimFraction');
    expect(issuePaths(study({ strategy: { name: 'fedadam', beta2: 1 } }))).toContain('strategy.beta2');
    expect(issuePaths(study({ strategy: { name: 'fedavg', mu: 1 } as never }))).toEqual(['strategy']); // unknown key on a strict object
  });

  it('Krum: byzantine too large for minNodesPerRound names strategy.byzantine', () => {
    // f = 1 needs n >= 2f + 3 = 5 updates; minNodesPerRound is 3.
    expect(minimumUpdates(StrategyConfig.parse({ name: 'krum', byzantine: 1 }))).toBe(5);
    // A trimmed mean must trim at least one value at each end with the fewest nodes a round allows.
    expect(minimumUpdates(StrategyConfig.parse({ name: 'trimmed-mean' }))).toBe(10);
    expect(minimumUpdates(StrategyConfig.parse({ name: 'trimmed-mean', trimFraction: 0.3 }))).toBe(4);
    expect(minimumUpdates(StrategyConfig.parse({ name: 'trimmed-mean', trimFraction: 0.49 }))).toBe(3);
    expect(issuePaths(study({ strategy: { name: 'trimmed-mean' }, minNodesPerRound: 3 }))).toEqual(['strategy.trimFraction']);
    expect(new Set(issuePaths(study({ strategy: { name: 'trimmed-mean', trimFraction: 0 } })))).toEqual(new Set(['strategy.trimFraction']));
    expect(StudyConfig.safeParse(study({ strategy: { name: 'trimmed-mean', trimFraction: 0.34 }, minNodesPerRound: 3 })).success).toBe(true);
    expect(issuePaths(study({ strategy: { name: 'krum', byzantine: 1 } }))).toEqual(['strategy.byzantine']);
    expect(StudyConfig.safeParse(study({ strategy: { name: 'krum', byzantine: 0 } })).success).toBe(true);
    expect(StudyConfig.safeParse(study({ strategy: { name: 'krum', byzantine: 1 }, minNodesPerRound: 5 })).success).toBe(true);
  });

  it('central DP over a strategy that needs every update names strategy.name; over a mean-delta one it wraps', () => {
    for (const name of ['median', 'trimmed-mean'] as const) expect(issuePaths(study({ strategy: { name }, privacy: central, minNodesPerRound: 10 }))).toEqual(['strategy.name']);
    expect(issuePaths(study({ strategy: { name: 'krum', byzantine: 0 }, privacy: central }))).toEqual(['strategy.name']);
    const ok = StudyConfig.parse(study({ strategy: { name: 'fedyogi' }, privacy: central }));
    const s = createStrategy(ok);
    expect(s).toBeInstanceOf(ClientLevelDpStrategy);
    expect(s.name).toMatch(/^client-level-dp\(fedyogi/);
  });
});
