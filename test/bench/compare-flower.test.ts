import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../helpers/processes.ts';
import { demoSplit, exportDemoSplit } from '../../bench/export-demo-split.ts';
import { compareFlower, fedmarkFigures, ratiosOf, type FlowerFigures } from '../../bench/compare-flower.ts';
import { encodeTable, readCsvTable } from '../../models/index.ts';
import { initialWeights, modelTensorSpecs } from '../../protocols/model-spec.ts';
import { encodedWidth } from '../../protocols/feature-spec.ts';

/**
 * Runs `fedmark demo` (the CLI, in its own process group) until it says where its split went:
 * the node CSVs and test.csv are written before that line and before any process starts; the
 * federation itself is not needed here, so the group (demo and coordinator) is then stopped.
 */
function demoUntilSplitWritten(out: string): Promise<void> {
  return new Promise((resolveDemo, reject) => {
    const child = spawn(process.execPath, [BIN, 'demo', '--json', '--no-local-baseline', '--out', out], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
      if (/held out for the test; output in/.test(stderr)) {
        process.kill(-child.pid!, 'SIGKILL');
        resolveDemo();
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => (signal ? undefined : reject(new Error(`fedmark demo exited (${code}) before writing its split:\n${stderr}`))));
  });
}

/**
 * bench/export-demo-split.ts repeats the demo's split for Flower: it must stay the demo's. The
 * reference is what a real `fedmark demo` writes (one short round: the split does not depend on
 * the rounds or the model), compared file by file.
 */
describe('compare-flower: the exported split is the demo\'s', () => {
  it('gives every node the rows the demo gives it, and holds out the same test rows', async () => {
    const root = mkdtempSync(join(tmpdir(), 'fedmark-compare-flower-test-'));
    try {
      const demoOut = join(root, 'demo');
      await demoUntilSplitWritten(demoOut);
      const meta = exportDemoSplit(join(root, 'split'));
      const demoNodes = readdirSync(join(demoOut, 'nodes')).sort();
      expect(meta.nodes.map((n) => n.name)).toEqual(demoNodes);
      expect(demoNodes).toHaveLength(10);
      for (const node of meta.nodes) {
        const ours = readFileSync(join(root, 'split', 'nodes', node.name, 'data.csv'), 'utf8');
        const theirs = readFileSync(join(demoOut, 'nodes', node.name, 'data.csv'), 'utf8');
        expect(ours, node.name).toBe(theirs);
        expect(node.rows, node.name).toBe(theirs.trim().split('\n').length - 1);
        expect(node.trainRows + node.validationRows).toBe(node.rows);
      }
      expect(readFileSync(join(root, 'split', 'test.csv'), 'utf8')).toBe(readFileSync(join(demoOut, 'test.csv'), 'utf8'));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 180_000);

  it('exports the encoded rows and the round-0 model the federation starts from', () => {
    const root = mkdtempSync(join(tmpdir(), 'fedmark-compare-flower-enc-'));
    try {
      const split = demoSplit();
      const meta = exportDemoSplit(root, split);
      const f32 = (name: string) => new Float32Array(new Uint8Array(readFileSync(join(root, name))).buffer);
      expect(meta.width).toBe(encodedWidth(split.spec));
      expect(meta.layers).toEqual([meta.width, 32, 16, 1]);
      expect(meta.training).toMatchObject({ localEpochs: 1, batchSize: 32, learningRate: 0.01, optimizer: 'adam', seed: 42 });
      // The test rows: the demo's test.csv encoded with the study's spec, row for row.
      const test = encodeTable(readCsvTable({ path: join(root, 'test.csv') }), split.spec);
      expect(meta.test.rows).toBe(split.testIdx.length);
      expect(f32(meta.test.x)).toEqual(test.x);
      expect(f32(meta.test.y)).toEqual(test.y);
      for (const node of meta.nodes) {
        expect(f32(node.x).length, node.name).toBe(node.trainRows * meta.width);
        expect(f32(node.y).length, node.name).toBe(node.trainRows);
      }
      // The coordinator's round-0 model (initialWeights of the study's tensors and seed).
      if (split.study.model.kind !== 'mlp') throw new Error('the demo model is an MLP');
      const expected = initialWeights(modelTensorSpecs(split.study.model, meta.width), 42).flatMap((w) => [...w.values]);
      expect([...f32(meta.initial.file)]).toEqual(expected);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('compare-flower: skips and figures', () => {
  it('skips with one line naming the missing Flower source tree, without running Python', async () => {
    const result = await compareFlower({ flowerSrc: join(tmpdir(), 'no-flower-here'), python: '/no/python3' });
    expect(result).toEqual({ skipped: true, reason: expect.stringMatching(/^compare-flower skipped: no Flower source tree at .*no-flower-here/) });
  });

  it('skips naming the Python that cannot run', async () => {
    const fake = mkdtempSync(join(tmpdir(), 'fake-flower-'));
    try {
      const { mkdirSync, writeFileSync } = await import('node:fs');
      mkdirSync(join(fake, 'src', 'py', 'flwr'), { recursive: true });
      writeFileSync(join(fake, 'src', 'py', 'flwr', '__init__.py'), '');
      const result = await compareFlower({ flowerSrc: fake, python: '/no/python3' });
      expect(result.skipped).toBe(true);
      expect(result.skipped && result.reason).toMatch(/no Python with PyTorch.*\/no\/python3 is not runnable/);
      expect(existsSync(fake)).toBe(true);
    } finally {
      rmSync(fake, { recursive: true, force: true });
    }
  });

  it('takes the median of rounds 2.. from rounds[].seconds when the demo has no medianRoundSeconds, and divides fedmark by Flower', () => {
    const demo = { globalTestAuc: 0.9, wallSeconds: 40, rounds: [1, 2, 3, 4].map((round) => ({ round, phase: 'completed', seconds: round === 1 ? 12 : round })) };
    const figures = fedmarkFigures(demo);
    expect(figures).toMatchObject({ medianRoundSeconds: 3, medianFrom: 'rounds', coordinatorPeakRssMb: null, testAuc: 0.9 });
    expect(fedmarkFigures({ ...demo, medianRoundSeconds: 0.5 })).toMatchObject({ medianRoundSeconds: 0.5, medianFrom: 'medianRoundSeconds' });
    const flower = { testAuc: 0.8, medianRoundSeconds: 1.5, roundOneSeconds: null, wallSeconds: 20, serverPeakRssMb: 250, clientPeakRssMbMax: 260, cpuSeconds: { server: 4, clients: 36 } } as unknown as FlowerFigures;
    expect(ratiosOf(figures, flower)).toEqual({ testAuc: 0.9 / 0.8, medianRound: 2, roundOne: null, wall: 2, serverPeakRss: null, nodePeakRss: null, cpu: null });
    const measured = fedmarkFigures({ ...demo, coordinatorPeakRssMb: 500, nodePeakRssMb: 130, coordinatorCpuSeconds: 20, nodeCpuSeconds: 60 });
    expect(ratiosOf(measured, flower)).toMatchObject({ serverPeakRss: 2, nodePeakRss: 0.5, cpu: 2 });
  });
});
