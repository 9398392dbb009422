import { setFlagsFromString } from 'node:v8';

/**
 * A node runs its round code (task checks, decoding, sealing, signing, HTTP) once per round: too
 * rarely for V8 to leave its interpreter for many rounds, since baseline compilation (Sparkplug)
 * comes only after a function has run for a while. Compiling every function to baseline code on
 * its first call costs a little memory and start-up time and takes CPU off every early round
 * (issue 13, alternated runs against the code without it: the ten nodes' CPU a round, median of
 * each 20-round run, 84-110 -> 73-79 ms and the median round 0.125 -> 0.113 s over 5 + 5 runs;
 * over 60 rounds 69 -> 64 ms and 0.109 -> 0.100 s; node peak RSS +3 MB). It comes too late for
 * functions already compiled (start-up code), and is left off the coordinator, whose per-request
 * code runs ten times a round and warms up anyway: measured there, no gain and +15-20 MB of RSS.
 *
 * Set at run time because operators start `fedmark node` themselves. V8 reads the flag whenever
 * it compiles a function (lazily, on first call), so code compiled afterwards gets it; Node starts
 * V8 with --no-freeze-flags-after-init, which keeps v8.setFlagsFromString working after start-up
 * (checked on Node 20 by test/cli/v8-tuning.test.ts).
 */
export function compileRoundCodeEagerly(): string[] {
  return setV8Flags(['--always-sparkplug']);
}

/** Sets each flag and returns them: every tuning here is logged at start-up ('v8 tuning'), so an operator sees what was set. */
function setV8Flags(flags: string[]): string[] {
  for (const flag of flags) setFlagsFromString(flag);
  return flags;
}

/**
 * V8's interrupt budget on Node 20 (`node --v8-options`: --interrupt-budget=67584): the bytecode a
 * function runs between two of the profiler's ticks; TurboFan takes a function after a few ticks.
 */
export const V8_DEFAULT_INTERRUPT_BUDGET = 67_584;

/** A node's interrupt budget: four times V8's (optimizeOnlyHotNodeCode). */
export const NODE_INTERRUPT_BUDGET = 4 * V8_DEFAULT_INTERRUPT_BUDGET;

/**
 * A node leaves to TurboFan only code that is hot (the trainer's loops, the codecs, the crypto),
 * not the code that runs a few times a round or once at start-up (HTTP, zod, the task checks,
 * logging, loading the data): at V8's budget each of the demo's ten node processes kept compiling
 * a few more of those every round, ~1-1.6 ms of CPU a round each on its helper threads (`perf
 * record -a`, rounds 3-29), on the two cores the whole federation shares. Four times V8's budget;
 * sixteen times was worse (the trainer's loops then wait too: the nodes' CPU over rounds 4-19
 * 106-140 against 87-102 ms a round, 4 pairs). Measured (issue 13, 17 ABBA pairs of the 10-node
 * demo, README "stop 25"): the nodes' CPU over the demo 0.92x (lower in 15 of 17 pairs), round 1
 * (the nodes' start-up) 5.39 -> 5.13 s (shorter in 15 of 17), wall 0.94x, node peak RSS -1.1 MB
 * (17 of 17), AUC the same; the median round 0.142 -> 0.132 s, faster in only 10 of 17 pairs: no
 * gain there beyond the noise. The fused trainer's samples/s is unchanged (bench/train-bench.ts
 * with and without the flag: 797k/767k against 727k/826k at batch 64).
 *
 * Set at run time, as compileRoundCodeEagerly: V8 reads the budget whenever it resets a function's
 * counter, so every function from then on gets it (test/cli/v8-tuning.test.ts counts the calls a
 * function needs before TurboFan takes it, before and after).
 */
export function optimizeOnlyHotNodeCode(): string[] {
  return setV8Flags([`--interrupt-budget=${NODE_INTERRUPT_BUDGET}`]);
}

/**
 * The coordinator's optimizing compiler (TurboFan) does not inline. Its per-request code (HTTP,
 * the signed-request check, kysely, PGlite's protocol, zod, the intake) is warm, not hot: each
 * function runs ten to thirty times a round, polymorphic and async, so V8 keeps optimizing a few
 * more of them every round, and inlining is most of each compile. On two cores that compile time
 * (V8's helper threads: ~15-20 ms of CPU a round at round 20-60 of the 10-node demo, measured with
 * `perf`) is taken from the nodes and the coordinator's own main thread. Measured (issue 13,
 * alternated runs on the shared 2-core machine, README "stop 24"): over a 60-round demo the
 * coordinator's CPU a round 74-79 -> 67-73 ms and the median round 0.075-0.081 -> 0.073-0.078 s
 * (4 ABBA pairs); over the default 20 rounds, mostly V8's warm-up, no change beyond the noise
 * (18 pairs). The heavy paths are unchanged (FedAvg of 100 x 1M 0.059-0.061 s both ways: its
 * kernels are WebAssembly; one 1M update's coordinator path 0.027-0.030 vs 0.028-0.033 s). Nodes
 * keep inlining: their round code rarely gets that far.
 *
 * Set at run time, first thing, as compileRoundCodeEagerly: V8 reads the flag for every
 * optimization job it starts afterwards (checked on Node 20 by test/cli/v8-tuning.test.ts).
 */
export function optimizeCoordinatorCodeWithoutInlining(): string[] {
  return setV8Flags(['--no-turbo-inlining']);
}
