package org.sparkmoe.kernels;

/**
 * The element-wise gate of an expert FFN, {@code act = f(h1, h3)} from the gate projection h1 and the up projection
 * h3, with its two partial derivatives. Values in float64; for a float32 computation every operation is rounded to
 * float32 where torch rounds ({@code single}).
 */
public enum GatedActivation {
    /** SwiGLU (Mixtral, Qwen2/3-MoE, OLMoE): act = silu(h1)·h3, silu(z) = z·σ(z). */
    SWIGLU {
        @Override
        double forward(double z, double u, boolean single) {
            return Flat.round(Flat.round(z / (1.0 + Math.exp(-z)), single) * u, single);
        }

        @Override
        void backward(double z, double u, double dAct, double[] out, int at) {
            double sig = 1.0 / (1.0 + Math.exp(-z));
            out[at] = dAct * u * sig * (1.0 + z * (1.0 - sig));
            out[at + 1] = dAct * z * sig;
        }
    },
    /**
     * gpt-oss (transformers' {@code GptOssExperts._apply_gate}): g = min(h1, 7), u = clamp(h3, −7, 7),
     * act = (u + 1)·g·σ(1.702·g). Clamped values pass no gradient (torch's clamp passes it where the value lies within
     * the bounds, ends included): dact/dh1 = (u + 1)·(σ + 1.702·g·σ(1 − σ)) for h1 ≤ 7, dact/dh3 = g·σ for |h3| ≤ 7.
     */
    CLAMPED_SWIGLU {
        @Override
        double forward(double z, double u, boolean single) {
            double g = Math.min(z, LIMIT);
            double up = Math.max(-LIMIT, Math.min(u, LIMIT));
            double sig = Flat.round(1.0 / (1.0 + Math.exp(-Flat.round(g * alpha(single), single))), single);
            double glu = Flat.round(g * sig, single);
            return Flat.round(Flat.round(up + 1.0, single) * glu, single);
        }

        @Override
        void backward(double z, double u, double dAct, double[] out, int at) {
            double g = Math.min(z, LIMIT);
            double up = Math.max(-LIMIT, Math.min(u, LIMIT));
            double sig = 1.0 / (1.0 + Math.exp(-ALPHA * g));
            out[at] = z <= LIMIT ? dAct * (up + 1.0) * (sig + ALPHA * g * sig * (1.0 - sig)) : 0.0;
            out[at + 1] = Math.abs(u) <= LIMIT ? dAct * g * sig : 0.0;
        }
    };

    /** gpt-oss's {@code limit} (transformers fixes it at 7.0). */
    public static final double LIMIT = 7.0;
    /** gpt-oss's {@code alpha}. */
    public static final double ALPHA = 1.702;

    /** α as the computation sees it: a Python float times a float32 tensor is a float32 product. */
    private static double alpha(boolean single) {
        return single ? (float) ALPHA : ALPHA;
    }

    /** act from the gate value z = h1 and the up value u = h3. */
    abstract double forward(double z, double u, boolean single);

    /** out[at] = dL/dh1, out[at + 1] = dL/dh3 given dL/dact. */
    abstract void backward(double z, double u, double dAct, double[] out, int at);
}
