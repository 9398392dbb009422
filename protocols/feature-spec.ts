import { z } from 'zod';

/**
 * The feature spec belongs to the study, never to a node: every node encodes its rows with the
 * same columns, vocabularies and scaling, so no node ever has to reveal its own vocabulary or
 * column statistics. Unseen categories fall into an "other" bucket, missing ones into "missing".
 */
export const NumericFeature = z.object({
  name: z.string().min(1),
  kind: z.literal('numeric'),
  /** Standardization: (x - mean) / std. */
  mean: z.number().finite(),
  std: z.number().finite().positive(),
  /** Value used for an empty or `NA` cell, before standardization. */
  fill: z.number().finite(),
  /** Data-minimization category (e.g. "behavior", "health"); policies may forbid some. */
  category: z.string().optional(),
});
export type NumericFeature = z.infer<typeof NumericFeature>;

export const CategoricalFeature = z.object({
  name: z.string().min(1),
  kind: z.literal('categorical'),
  categories: z.array(z.string()).min(1),
  category: z.string().optional(),
});
export type CategoricalFeature = z.infer<typeof CategoricalFeature>;

export const Feature = z.discriminatedUnion('kind', [NumericFeature, CategoricalFeature]);
export type Feature = z.infer<typeof Feature>;

/** A binary classification target: the label value of the positive class. */
export const BinaryTarget = z.object({
  column: z.string().min(1),
  /** The label value counted as the positive class (1); every other value is 0. */
  positive: z.string(),
});
export type BinaryTarget = z.infer<typeof BinaryTarget>;

/**
 * A regression target: a numeric column. `center` and `scale` (the mean and standard deviation
 * of a sample the study owner looked at, fixed before training) standardize it for training:
 * mse and huber fit (y - center) / scale; `center` is also the mean-only baseline every
 * evaluation is compared against (on the target's own scale). `transform` is implied by the
 * study's loss (task.loss) and only restates it: `log1p` (loss log1p: the model fits
 * log(1 + y) - log(1 + center)), `log` (loss tweedie: the model outputs log(mu / center)).
 */
export const NumericTarget = z.object({
  column: z.string().min(1),
  kind: z.literal('numeric'),
  center: z.number().finite(),
  scale: z.number().finite().positive(),
  transform: z.enum(['identity', 'log1p', 'log']).optional(),
});
export type NumericTarget = z.infer<typeof NumericTarget>;

/** Numeric first: a binary target has no `kind`, a numeric one must say so. */
export const Target = z.union([NumericTarget, BinaryTarget]);
export type Target = z.infer<typeof Target>;

export function isNumericTarget(target: Target): target is NumericTarget {
  return 'kind' in target && target.kind === 'numeric';
}

export const FeatureSpec = z
  .object({
    version: z.literal(1).default(1),
    target: Target,
    features: z.array(Feature).min(1),
    /** Cells read as missing (besides the empty string). */
    missingValues: z.array(z.string()).default(['NA']),
  })
  .superRefine((spec, ctx) => {
    const seen = new Set<string>();
    for (const [i, f] of spec.features.entries()) {
      if (seen.has(f.name)) ctx.addIssue({ code: 'custom', path: ['features', i, 'name'], message: `duplicate feature "${f.name}"` });
      if (f.name === spec.target.column) ctx.addIssue({ code: 'custom', path: ['features', i, 'name'], message: `feature "${f.name}" is the target column` });
      seen.add(f.name);
    }
  });
export type FeatureSpec = z.infer<typeof FeatureSpec>;

/** Extra one-hot slots each categorical feature gets after its vocabulary. */
export const OTHER_BUCKET = '__other__';
export const MISSING_BUCKET = '__missing__';

/** Width of the encoded input vector: one column per numeric feature, vocabulary + other + missing per categorical. */
export function encodedWidth(spec: FeatureSpec): number {
  let width = 0;
  for (const f of spec.features) width += f.kind === 'numeric' ? 1 : f.categories.length + 2;
  return width;
}
