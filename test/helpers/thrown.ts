import { expect } from 'vitest';

/** The error `run` throws, checked to be a `Kind`; fails the test when nothing is thrown. */
export function thrown<E extends Error>(Kind: abstract new (...args: never[]) => E, run: () => unknown): E {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(Kind);
    return err as E;
  }
  throw new Error(`expected a ${Kind.name}`);
}
