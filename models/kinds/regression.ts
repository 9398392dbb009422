import type { NodeModelKind } from './kind.ts';
import type { StudyConfig } from '../../protocols/messages.ts';

/** Regression (work in progress: filled in by the next commit). */
export function regressionKind(study: StudyConfig): NodeModelKind {
  throw new Error(`task.kind "regression" (study ${study.name}) is not supported by this node yet`);
}
