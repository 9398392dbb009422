import type { Command } from 'commander';

/** `fedmark study init`: a complete, commented study YAML from a CSV (issue 12). Registered on `study` by cli/study-command.ts. */
export function registerStudyInit(_study: Command): void {
  // Filled in by issue 12's work.
}
