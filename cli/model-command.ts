import type { Command } from 'commander';

/** `fedmark model export|verify`, `fedmark predict` (issue 12). */
export function registerModelCommands(_program: Command): void {
  // Filled in by issue 12's work.
}
