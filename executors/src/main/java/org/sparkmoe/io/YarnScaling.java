package org.sparkmoe.io;

/**
 * YaRN rope scaling as transformers 5.17's {@code _compute_yarn_parameters} reads it from {@code rope_parameters}
 * (or the older {@code rope_scaling}) with {@code rope_type} "yarn". Fields keep their Hugging Face names.
 *
 * @param factor                           context extension factor s
 * @param original_max_position_embeddings the pretraining context length L
 * @param beta_fast                        rotations bounding the extrapolated band (default 32)
 * @param beta_slow                        rotations bounding the interpolated band (default 1)
 * @param mscale                           null when absent (or 0)
 * @param mscale_all_dim                   null when absent (or 0)
 * @param attention_factor                 the cos/sin factor when given explicitly, else null (derived)
 * @param truncate                         whether the correction range is rounded to whole dimensions (gpt-oss:
 *                                         false)
 */
public record YarnScaling(double factor, int original_max_position_embeddings, double beta_fast, double beta_slow,
                          Double mscale, Double mscale_all_dim, Double attention_factor, boolean truncate) {

    /** {@code yarn_get_mscale}: 0.1·m·ln(s) + 1 for s > 1, else 1. */
    public static double getMscale(double scale, double m) {
        return scale <= 1 ? 1.0 : 0.1 * m * Math.log(scale) + 1.0;
    }

    /**
     * The factor on cos and sin: {@code attention_factor} when given; else mscale(s, mscale)/mscale(s, mscale_all_dim)
     * when both are set; else mscale(s, 1).
     */
    public double cosSinFactor() {
        if (attention_factor != null) {
            return attention_factor;
        }
        if (mscale != null && mscale_all_dim != null) {
            return getMscale(factor, mscale) / getMscale(factor, mscale_all_dim);
        }
        return getMscale(factor, 1);
    }

    /**
     * DeepSeek's softmax scale ({@code yarn_apply_mscale}): {@code scaling·m·m} with m = mscale(s, mscale_all_dim)
     * when mscale_all_dim is set, else {@code scaling}. Other model types leave their softmax scale alone.
     */
    public double softmaxScale(double scaling) {
        if (mscale_all_dim == null) {
            return scaling;
        }
        double m = getMscale(factor, mscale_all_dim);
        return scaling * m * m;
    }
}
