/**
 * Which trainer a process uses (issue 13): the hand-written fused one (models/fused-mlp*.ts) by
 * default, TensorFlow.js with FEDMARK_TRAINER=tfjs. Here, apart from both, so that reading the
 * choice does not load TensorFlow.js.
 */
export const TRAINERS = ['tfjs', 'fused'] as const;

/**
 * True unless FEDMARK_TRAINER=tfjs: the fused trainer (and its forward pass for predictions) is
 * the default wherever it covers the model; a clear error for an unknown value.
 */
export function fusedTrainerWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.FEDMARK_TRAINER;
  if (value === undefined || value === '' || value === 'fused') return true;
  if (value === 'tfjs') return false;
  throw new RangeError(`FEDMARK_TRAINER must be one of ${TRAINERS.join(', ')}, got ${JSON.stringify(value)}`);
}
