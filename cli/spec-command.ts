import type { Command } from 'commander';

/** `fedmark spec infer` (issue 12). */
export function registerSpecCommands(_program: Command): void {
  // Filled in by issue 12's work.
}
