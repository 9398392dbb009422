import type { StudyConfig } from '../../protocols/messages.ts';
import { binaryKind } from './binary.ts';
import type { NodeModelKind } from './kind.ts';
import { regressionKind } from './regression.ts';

export type { NodeModelKind, TrainArgs, KindTrainResult } from './kind.ts';

/** The node half of the study's model kind (study.task). */
export function nodeKindFor(study: StudyConfig): NodeModelKind {
  return study.task.kind === 'binary' ? binaryKind : regressionKind(study);
}
