/**
 * Local training throughput (issue 13, "Local training"): samples/s of an MLP 40-64-32-1 (ReLU,
 * sigmoid output, binary cross-entropy) with Adam at batch 64 and 1024, three ways on the same
 * rows: fedmark's fused trainer (trainLocal's default path), TensorFlow.js wasm
 * (FEDMARK_TRAINER=tfjs), and PyTorch CPU with 2 threads (bench/torch_mlp.py) when `python3 -c
 * 'import torch'` works (Debian: apt-get install python3-torch); skipped with a message otherwise.
 * The ratios also compare with the recorded PyTorch figures (RECORDED_PYTORCH). All three go through a full training loop
 * (seeded/random shuffle each epoch, consecutive batches), not a bare step.
 *
 *   node bin/run-ts.js bench/train-bench.ts            # JSON lines on stdout, a table on stderr
 *   npm run bench -- --only trainers                   # the same, as a section of bench/run.ts
 *
 * Rows are synthetic (dense Gaussian inputs, labels from a noisy linear rule), 40 wide, so the
 * fused trainer gets no help from zero inputs it could skip (real one-hot data have many).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../models/backend.ts';
import { createModel } from '../models/model-factory.ts';
import { trainLocal } from '../models/train.ts';
import type { EncodedData } from '../models/encode.ts';
import { TrainingConfig } from '../protocols/training-config.ts';
import { mulberry32 } from '../protocols/random.ts';

export interface TrainBenchRow {
  trainer: 'fused' | 'tfjs-wasm' | 'pytorch';
  batch: number;
  /** Median of `repeats` timed runs (wall clock); null when the trainer could not run. */
  samplesPerSecond: number | null;
  /**
   * Samples per second of CPU time (all the process's threads): less sensitive to other load on
   * the machine than wall time, which a busy shared machine makes meaningless for multi-threaded
   * PyTorch.
   */
  samplesPerCpuSecond?: number | null;
  threads: number;
  note?: string;
}

export interface TrainBenchOptions {
  rows?: number;
  hidden?: number[];
  width?: number;
  batches?: number[];
  /** Each timed run trains whole epochs until at least this long. */
  minSeconds?: number;
  repeats?: number;
  /** PyTorch thread counts to run, the first one the comparison (default [2, 1]: 2 as the figure). */
  torchThreads?: number[];
}

/** Rows as the brief's MLP sees them: N(0, 1)-ish inputs, 0/1 labels from a noisy linear rule. */
export function syntheticRows(n: number, width: number, seed = 42): EncodedData {
  const r = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const w = Array.from({ length: width }, gauss);
  const x = new Float32Array(n * width);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let c = 0; c < width; c++) s += (x[i * width + c] = gauss()) * w[c];
    y[i] = s / Math.sqrt(width) + gauss() > 0 ? 1 : 0;
  }
  return { x, y, n, width } as EncodedData;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** samples/s of trainLocal with FEDMARK_TRAINER set to `trainer` (median of repeats). */
async function timeTrainLocal(trainer: 'fused' | 'tfjs', data: EncodedData, hidden: number[], batch: number, minSeconds: number, repeats: number): Promise<{ wall: number; cpu: number }> {
  const saved = process.env.FEDMARK_TRAINER;
  process.env.FEDMARK_TRAINER = trainer;
  try {
    const model = createModel({ kind: 'mlp', hidden }, data.width, 42);
    const config = TrainingConfig.parse({ localEpochs: 1, batchSize: batch, learningRate: 0.001 });
    await trainLocal(model, data, config, { yieldEveryMs: 1e9 }); // warm-up: JIT, kernels, allocations
    const rates: number[] = [];
    const cpuRates: number[] = [];
    for (let r = 0; r < repeats; r++) {
      let epochs = 0;
      const started = performance.now();
      const cpuStarted = process.cpuUsage();
      let seconds = 0;
      do {
        await trainLocal(model, data, config, { seed: r * 1000 + epochs, yieldEveryMs: 1e9 });
        epochs++;
        seconds = (performance.now() - started) / 1000;
      } while (seconds < minSeconds);
      rates.push((data.n * epochs) / seconds);
      const cpu = process.cpuUsage(cpuStarted);
      cpuRates.push((data.n * epochs) / ((cpu.user + cpu.system) / 1e6));
    }
    model.dispose();
    return { wall: median(rates), cpu: median(cpuRates) };
  } finally {
    if (saved === undefined) delete process.env.FEDMARK_TRAINER;
    else process.env.FEDMARK_TRAINER = saved;
  }
}

/** The first python that imports torch: $PYTHON, python3, then the system's /usr/bin/python3. */
export function findTorchPython(): string | null {
  for (const python of [process.env.PYTHON, 'python3', '/usr/bin/python3']) {
    if (!python) continue;
    // Importing torch takes ~3 CPU-s: over a minute of wall time on a loaded 2-core machine.
    const probe = spawnSync(python, ['-c', 'import torch, numpy'], { stdio: 'ignore', timeout: 300_000 });
    if (probe.status === 0) return python;
  }
  return null;
}

function timeTorch(python: string, dir: string, data: EncodedData, widths: number[], batch: number, threads: number, minSeconds: number, repeats: number): TrainBenchRow {
  const script = fileURLToPath(new URL('./torch_mlp.py', import.meta.url));
  const args = [script, '--x', join(dir, 'x.f32'), '--y', join(dir, 'y.f32'), '--rows', String(data.n), '--widths', widths.join(','), '--batch', String(batch), '--threads', String(threads), '--min-seconds', String(minSeconds), '--repeats', String(repeats)];
  const run = spawnSync(python, args, { encoding: 'utf8', timeout: 600_000 });
  const line = run.stdout?.trim().split('\n').pop();
  if (run.status !== 0 || !line) return { trainer: 'pytorch', batch, samplesPerSecond: null, threads, note: `torch_mlp.py failed: ${(run.stderr || String(run.error)).trim().split('\n').pop()}` };
  const out = JSON.parse(line) as { samplesPerSecond: number; samplesPerCpuSecond: number; torch: string; threads: number };
  return { trainer: 'pytorch', batch, samplesPerSecond: out.samplesPerSecond, samplesPerCpuSecond: out.samplesPerCpuSecond, threads: out.threads, note: `torch ${out.torch}` };
}

/** The three trainers at each batch size, interleaved per batch size so load changes hit all alike. */
export async function trainBench(options: TrainBenchOptions = {}): Promise<TrainBenchRow[]> {
  const { rows = 8192, hidden = [64, 32], width = 40, batches = [64, 1024], minSeconds = 1.5, repeats = 3, torchThreads = [2, 1] } = options;
  const data = syntheticRows(rows, width);
  await initBackend('wasm');
  const python = findTorchPython();
  const dir = mkdtempSync(join(tmpdir(), 'fedmark-train-bench-'));
  writeFileSync(join(dir, 'x.f32'), data.x);
  writeFileSync(join(dir, 'y.f32'), data.y);
  const out: TrainBenchRow[] = [];
  try {
    for (const batch of batches) {
      for (const [trainer, name] of [['fused', 'fused'], ['tfjs', 'tfjs-wasm']] as const) {
        // Named explicitly: FEDMARK_TRAINER picks the trainer (fused is also the default).
        const { wall, cpu } = await timeTrainLocal(trainer, data, hidden, batch, minSeconds, repeats);
        out.push({ trainer: name, batch, samplesPerSecond: wall, samplesPerCpuSecond: cpu, threads: 1 });
      }
      for (const threads of torchThreads) {
        out.push(
          python === null
            ? { trainer: 'pytorch', batch, samplesPerSecond: null, threads, note: "skipped: no python3 that can 'import torch' (apt-get install python3-torch python3-numpy)" }
            : timeTorch(python, dir, data, [width, ...hidden, 1], batch, threads, minSeconds, repeats),
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/**
 * PyTorch 1.13 CPU, 2 threads, on this MLP, measured side by side in issue 13 (samples/s, wall).
 * The ratio to these is only indicative (another sitting, another load): the side-by-side
 * ratios above are the measurement.
 */
export const RECORDED_PYTORCH: Readonly<Record<number, number>> = { 64: 166_000, 1024: 258_000 };

export interface TrainBenchRatio {
  batch: number;
  fusedOverTfjs: number | null;
  /** Wall-clock samples/s, fused / PyTorch at its first thread count (2), side by side. */
  fusedOverPytorch: number | null;
  /** Samples per CPU-second, fused / PyTorch: the load-insensitive comparison. */
  fusedOverPytorchCpu: number | null;
  /** The recorded PyTorch samples/s at this batch size, and fused / it (wall). */
  recordedPytorch: number | null;
  fusedOverRecordedPytorch: number | null;
}

/** Ratios fused / other per batch size (> 1: the fused trainer is faster); PyTorch's first thread count. */
export function trainBenchRatios(rows: TrainBenchRow[]): TrainBenchRatio[] {
  const batches = [...new Set(rows.map((r) => r.batch))];
  const find = (trainer: TrainBenchRow['trainer'], batch: number) => rows.find((r) => r.trainer === trainer && r.batch === batch);
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b != null ? a / b : null);
  return batches.map((batch) => {
    const fused = find('fused', batch);
    const torch = find('pytorch', batch);
    return {
      batch,
      fusedOverTfjs: ratio(fused?.samplesPerSecond, find('tfjs-wasm', batch)?.samplesPerSecond),
      fusedOverPytorch: ratio(fused?.samplesPerSecond, torch?.samplesPerSecond),
      fusedOverPytorchCpu: ratio(fused?.samplesPerCpuSecond, torch?.samplesPerCpuSecond),
      recordedPytorch: RECORDED_PYTORCH[batch] ?? null,
      fusedOverRecordedPytorch: ratio(fused?.samplesPerSecond, RECORDED_PYTORCH[batch]),
    };
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = await trainBench();
  const say = (line: string) => process.stderr.write(line + '\n');
  say(`\nLocal training, MLP 40-64-32-1, Adam, 8192 synthetic rows (samples/s, median of 3; load average ${loadavg()[0].toFixed(1)} on ${cpus().length} CPUs)`);
  const n = (x: number | null | undefined) => (x == null ? '-' : Math.round(x).toString()).padStart(8);
  for (const r of rows) say(`  ${r.trainer.padEnd(10)} batch ${String(r.batch).padStart(5)}  ${n(r.samplesPerSecond)} /s  ${n(r.samplesPerCpuSecond)} /CPU-s  threads ${r.threads}  ${r.note ?? ''}`);
  for (const q of trainBenchRatios(rows)) say(`  batch ${q.batch}: fused / tfjs-wasm ${q.fusedOverTfjs?.toFixed(2) ?? '-'}, fused / pytorch ${q.fusedOverPytorch?.toFixed(2) ?? '-'} (per CPU-second ${q.fusedOverPytorchCpu?.toFixed(2) ?? '-'}), fused / recorded pytorch ${q.fusedOverRecordedPytorch?.toFixed(2) ?? '-'}`);
  for (const r of rows) process.stdout.write(JSON.stringify({ bench: 'train', ...r }) + '\n');
  for (const q of trainBenchRatios(rows)) process.stdout.write(JSON.stringify({ bench: 'train-ratio', ...q }) + '\n');
}
