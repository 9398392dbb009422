import type { Command } from 'commander';

/** `fedmark token issue`, `fedmark node ls` (issue 12). */
export function registerTokenCommands(_program: Command): void {
  // Filled in by issue 12's work.
}
