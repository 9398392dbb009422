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
export function compileRoundCodeEagerly(): void {
  setFlagsFromString('--always-sparkplug');
}
