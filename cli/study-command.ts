import type { Command } from 'commander';

/** `fedmark study init|create|ls|status|watch|stop` (issue 12). */
export function registerStudyCommands(_program: Command): void {
  // Filled in by issue 12's work.
}
