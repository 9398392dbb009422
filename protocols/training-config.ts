import { z } from 'zod';

/** How each node trains locally in one round. Sent with every task, owned by the study. */
export const TrainingConfig = z.object({
  localEpochs: z.number().int().positive().max(1000).default(1),
  batchSize: z.number().int().positive().max(65536).default(32),
  learningRate: z.number().positive().max(10).default(0.01),
  optimizer: z.enum(['adam', 'sgd']).default('adam'),
  /** Fraction of a node's rows it keeps aside to evaluate the global model each round. */
  validationFraction: z.number().min(0).max(0.5).default(0.2),
  seed: z.number().int().nonnegative().default(42),
  /**
   * Optional: a column of the node's data holding a stable row id (a customer id). Each row's
   * side of the train/validation split is a keyed hash of it; without it, of the row's content
   * (client-node/data.ts, validationSplit).
   */
  idColumn: z.string().min(1).max(200).optional(),
});
export type TrainingConfig = z.infer<typeof TrainingConfig>;
