package org.sparkmoe.model;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.model.AdapterTerms.Site;
import org.sparkmoe.mumoe.MumoeGradients;
import org.sparkmoe.mumoe.MumoeLayer;

/**
 * The attention of a decoder layer: {@link Attention} (grouped-query) or {@link LatentAttention} (DeepSeek's MLA).
 * Rows are batch-major [B·S, D]. The training pair takes FLOAT or DOUBLE and in FLOAT is bit-identical to
 * {@link #forward}; the weights are frozen, only the input gets a gradient.
 */
public interface SelfAttention {

    /** A training forward's result and what {@link #backward} needs. */
    interface Context {
        /** @return [B·S, D] */
        INDArray out();
    }

    /** x [B·S, D] → [B·S, D]. */
    default INDArray forward(INDArray x, int batch, int seq, RotaryEmbedding rope) {
        return forward(x, batch, seq, rope, LinearInputs.NONE);
    }

    /** x [B·S, D] → [B·S, D], showing the projections' inputs to {@code inputs}. */
    INDArray forward(INDArray x, int batch, int seq, RotaryEmbedding rope, LinearInputs inputs);

    /** x [B·S, D] → Context with out [B·S, D]; FLOAT or DOUBLE. */
    Context forwardTraining(INDArray x, int batch, int seq, RotaryEmbedding rope);

    /**
     * The mirror of {@link #forwardTraining}.
     *
     * @param ctx  what this attention's {@link #forwardTraining} returned
     * @param dOut [B·S, D]
     * @return dx [B·S, D]
     */
    INDArray backward(Context ctx, INDArray dOut);

    /**
     * As {@link #backward(Context, INDArray)}, putting the gradients of the adapter terms beside its projections
     * into {@code termGradients} (by site; none unless {@link #withTerms} gave it terms).
     */
    default INDArray backward(Context ctx, INDArray dOut, Map<Site, MumoeGradients> termGradients) {
        return backward(ctx, dOut);
    }

    /**
     * This attention with adapter terms beside its q/k/v/o projections ({@link AdapterTerms}). Only grouped-query
     * {@link Attention} has those projections; the default refuses any term.
     */
    default SelfAttention withTerms(Map<Site, MumoeLayer> terms) {
        if (terms.isEmpty()) {
            return this;
        }
        throw new IllegalArgumentException("μMoE beside " + terms.keySet().iterator().next().id() + ": this model's "
                + "attention (" + getClass().getSimpleName() + ") has no q_proj/k_proj/v_proj/o_proj of grouped-query "
                + "attention; use --mumoe-targets moe");
    }
}
