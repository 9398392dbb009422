import { setFlagsFromString } from 'node:v8';

/**
 * A node runs its round code (task checks, decoding, sealing, signing, HTTP) once per round: too
 * rarely for V8 to leave its interpreter for many rounds, since baseline compilation (Sparkplug)
 * comes only after a function has run for a while. Compiling every function to baseline code
 * on its first call costs a little memory and start-up time and takes ~17% off a node's CPU
 * per round in the demo (issue 13, 5 + 5 alternated runs: the ten nodes' CPU a round 84-110 ->
 * 73-79 ms, median round 0.125 -> 0.113 s, node peak RSS +3 MB). It comes too late for the functions already compiled by
 * then (start-up code), and is left off the coordinator, whose per-request code runs ten times a
 * round and warms up anyway: measured there, no gain and +15-20 MB of RSS.
 *
 * Set at run time because operators start `fedmark node` themselves; V8 reads the flag whenever
 * it compiles a function (lazily, on first call), so code compiled afterwards gets it.
 */
export function compileRoundCodeEagerly(): void {
  setFlagsFromString('--always-sparkplug');
}
