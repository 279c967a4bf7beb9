package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Where a forward pass shows one decoder layer's linear layers their inputs, for importance statistics (llama.cpp's
 * imatrix: Σ x² per input column). A site is one input that one or more projections read; rows are batch-major
 * [T, width] (T = B·S tokens), and a per-head site lays each token's heads side by side, [T, H·n]; an adapter's μMoE
 * terms show their gates ({@link #termGates}). The forward pass only reads through it: what it computes does not change.
 */
@FunctionalInterface
public interface LinearInputs {

    /** The inputs a decoder layer's projections read. */
    enum Site {
        /** [T, D] the input norm's output: q, k, v (MLA: q or q_a, and kv_a). */
        ATTN_IN,
        /** [T, Q] MLA: q_a_layernorm's output, which q_b reads. */
        ATTN_Q_LATENT,
        /** [T, C] MLA: kv_a_layernorm's output, which kv_b reads. */
        ATTN_KV_LATENT,
        /** [T, H·dn] MLA: each head's q_nope, which llama.cpp's absorbed k_b reads. */
        ATTN_Q_NOPE,
        /** [T, H·C] MLA: each head's attention-weighted kv latent, which llama.cpp's absorbed v_b reads. */
        ATTN_V_LATENT,
        /** [T, H·hd] (MLA: [T, H·dv]) the merged heads, which o reads. */
        ATTN_OUT,
        /** [T, D] the post-attention norm's output: a dense MLP's gate and up, an MoE layer's router and shared expert. */
        FFN_IN,
        /** [T, I] a dense MLP's intermediate activation, which its down projection reads. */
        FFN_INTER,
        /** [T, S] the shared expert's intermediate activation, which its down projection reads. */
        SHARED_INTER
    }

    /** Shows {@code rows} [T, width] at {@code site}. */
    void add(Site site, INDArray rows);

    /**
     * Shows the gates a_l [T, N_l] (one per level) the μMoE term beside {@code site} ({@link AdapterTerms}) computed
     * in this pass; the term reads what the projection (or MoE block) beside it reads. Nobody sees them by default.
     */
    default void termGates(AdapterTerms.Site site, java.util.List<INDArray> gates) {
    }

    /** Whether {@code site} is wanted (a caller may skip computing what only a probe reads). */
    default boolean wants(Site site) {
        return true;
    }

    /** Sees nothing. */
    LinearInputs NONE = new LinearInputs() {
        @Override
        public void add(Site site, INDArray rows) {
        }

        @Override
        public boolean wants(Site site) {
            return false;
        }
    };
}
