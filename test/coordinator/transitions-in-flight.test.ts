import { describe, expect, it } from 'vitest';
import { createTransitionsInFlight } from '../../coordinator/rounds/transitions-in-flight.ts';

/** A promise settled by hand, and a log of what happened in which order. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}
const tick = () => new Promise((r) => setImmediate(r));

describe('transitions in flight (a round end checkpoint waits for the study work already running)', () => {
  it('waits for the work running when it starts to wait, then for the work that work started', async () => {
    const t = createTransitionsInFlight();
    const order: string[] = [];
    const intake = gate();
    const close = gate();
    const completion = t.track('s', async (self) => {
      await tick(); // its own transaction first; the intake has started meanwhile
      await t.othersSettled('s', self);
      order.push('checkpoint');
    });
    void t.track('s', async () => {
      await intake.opened;
      // The last update starts the fit's close before its intake settles.
      void t.track('s', async () => {
        await close.opened;
        order.push('close');
      });
      order.push('intake');
    });
    await tick();
    intake.open();
    await tick();
    expect(order).toEqual(['intake']);
    close.open();
    await completion;
    expect(order).toEqual(['intake', 'close', 'checkpoint']);
  });

  it('two that wait at once do not wait for each other (no deadlock), and other studies are not waited for', async () => {
    const t = createTransitionsInFlight();
    const other = gate();
    void t.track('other-study', () => other.opened);
    const a = t.track('s', async (self) => {
      await tick();
      await t.othersSettled('s', self);
      return 'a';
    });
    const b = t.track('s', async (self) => {
      await tick();
      await t.othersSettled('s', self);
      return 'b';
    });
    await expect(Promise.all([a, b])).resolves.toEqual(['a', 'b']);
    other.open();
  });

  it('gives up after its passes: a stream of new work does not starve it', async () => {
    const t = createTransitionsInFlight();
    let started = 0;
    const chain = (): Promise<void> => t.track('s', async () => {
      await tick();
      started++;
      if (started < 50) void chain();
    });
    void chain();
    const waiter = t.track('s', (self) => t.othersSettled('s', self, 3));
    await waiter;
    expect(started).toBeLessThan(10);
  });

  it('does not wait for work that hangs longer than its time bound', async () => {
    const t = createTransitionsInFlight();
    const never = gate();
    void t.track('s', () => never.opened); // a transition stuck on a lock held elsewhere
    const started = performance.now();
    await t.track('s', (self) => t.othersSettled('s', self, 3, 150));
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(140);
    expect(waited).toBeLessThan(2000);
    never.open();
  });

  it('a transition that throws at once is not left behind as running', async () => {
    const t = createTransitionsInFlight();
    expect(() => t.track('s', () => {
      throw new Error('at once');
    })).toThrow('at once');
    const started = performance.now();
    await t.track('s', (self) => t.othersSettled('s', self, 3, 1000));
    expect(performance.now() - started).toBeLessThan(500);
  });
  it('busy while any work of the study runs; allSettled waits for all of it, other studies not, within its bound', async () => {
    const t = createTransitionsInFlight();
    expect(t.busy('s')).toBe(false);
    const a = gate();
    const b = gate();
    const other = gate();
    let ended = 0;
    void t.track('s', () => a.opened).then(() => ended++);
    void t.track('s', () => b.opened).then(() => ended++);
    void t.track('o', () => other.opened);
    expect(t.busy('s')).toBe(true);
    let done = false;
    const settled = t.allSettled('s').then(() => ((done = true), ended));
    a.open();
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    expect(t.busy('s')).toBe(true);
    b.open();
    expect(await settled).toBe(2);
    expect(t.busy('s')).toBe(false);
    expect(t.busy('o')).toBe(true);
    const started = performance.now();
    await t.allSettled('o', 100);
    expect(performance.now() - started).toBeGreaterThanOrEqual(90);
    other.open();
  });
  it('busy and allSettled count round transitions, not update intakes; started() counts transitions ever begun', async () => {
    const t = createTransitionsInFlight();
    const intake = gate();
    void t.track('s', () => intake.opened, 'intake');
    expect(t.busy('s')).toBe(false);
    expect(t.started('s')).toBe(0);
    const quick = t.track('s', async () => undefined);
    expect(t.started('s')).toBe(1);
    await quick;
    await Promise.resolve();
    // Begun and done between two readings: busy() says no, started() tells.
    expect(t.busy('s')).toBe(false);
    expect(t.started('s')).toBe(1);
    const started = performance.now();
    await t.allSettled('s', 1000); // the intake still runs: not waited for
    expect(performance.now() - started).toBeLessThan(500);
    intake.open();
  });
});
