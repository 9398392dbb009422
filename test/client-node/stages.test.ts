import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const DIR = fileURLToPath(new URL('../../client-node/', import.meta.url));
const sources = readdirSync(DIR)
  .filter((f) => f.endsWith('.ts'))
  .map((f) => ({ file: f, text: readFileSync(join(DIR, f), 'utf8') }));

/** The node's layout, checked in its source: a newcomer's reading of it stays true. */
describe('client-node stages', () => {
  it('trains and evaluates only through the model kind (nodeKindFor), never TensorFlow training directly', () => {
    for (const { file, text } of sources) expect(text, file).not.toMatch(/\b(trainLocal|evaluateModel|trainDpSgd|predictScores|scoreHistogram)\b/);
    expect(sources.find((s) => s.file === 'node-runner.ts')!.text).toMatch(/nodeKindFor\(study\)/);
  });

  it('sends messages about the data only as the release step built them', () => {
    const client = sources.find((s) => s.file === 'coordinator-client.ts')!.text;
    expect(client).toMatch(/reportStatus\(report: Released<NodeStatusReport>\)/);
    expect(client).toMatch(/submitUpdate\([^)]*meta: Released<UpdateMeta>/);
    expect(client).toMatch(/submitEvaluation\([^)]*report: Released<EvaluationReport>\)/);
    // Only release.ts makes a Released value (the cast that brands it).
    for (const { file, text } of sources) if (file !== 'release.ts') expect(text, file).not.toMatch(/as Released</);
  });
});
