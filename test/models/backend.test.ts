import { createRequire } from 'node:module';
import * as tf from '../../models/tf.ts';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { currentBackend, initBackend } from '../../models/backend.ts';

function tfjsNodeInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node');
    return true;
  } catch {
    return false;
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('initBackend', () => {
  it('starts wasm (its .wasm files found in node_modules) and is idempotent', async () => {
    expect(currentBackend()).toBeUndefined();
    expect(await initBackend('wasm')).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(await initBackend()).toBe('wasm');
    expect(await Promise.all([initBackend(), initBackend('wasm')])).toEqual(['wasm', 'wasm']);
    // Really computes.
    expect(Array.from(tf.tidy(() => tf.add(tf.tensor1d([1, 2]), 1).dataSync()))).toEqual([2, 3]);
  });

  it.skipIf(tfjsNodeInstalled())('throws a clear error when the preferred backend cannot start, and keeps the current one', async () => {
    await expect(initBackend('tensorflow')).rejects.toThrow(/cannot use the TensorFlow.js backend "tensorflow": package @tensorflow\/tfjs-node is not installed/);
    expect(await initBackend()).toBe('wasm');
    await expect(initBackend('gpu' as 'cpu')).rejects.toThrow(/unknown TensorFlow.js backend "gpu"/);
  });

  it('switches to cpu without the "install tfjs-node" banner', async () => {
    const warn = vi.spyOn(console, 'warn');
    const log = vi.spyOn(console, 'log');
    expect(await initBackend('cpu')).toBe('cpu');
    tf.tidy(() => tf.add(tf.tensor1d([1, 2]), 1).dataSync());
    const printed = [...warn.mock.calls, ...log.mock.calls].flat().join('\n');
    expect(printed).not.toMatch(/tfjs-node/);
    expect(currentBackend()).toBe('cpu');
    expect(await initBackend('wasm')).toBe('wasm');
  });
});
