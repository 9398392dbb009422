import type { Command } from 'commander';
import { registerStudyInit } from './study-init.ts';

/** `fedmark study init|create|ls|status|watch|stop` (issue 12). */
export function registerStudyCommands(program: Command): void {
  const study = program.command('study').description('create, list, follow and stop studies on a coordinator');
  registerStudyInit(study);
  // create, ls, status, watch, stop: filled in by issue 12's work.
}
