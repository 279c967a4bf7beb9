package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.routing.Routes;

/**
 * The routed experts of one MoE layer: given the input x [T, D] and a routing decision (K experts per token with
 * weights g), the mixture {@code out[t] = Σ_k g_{t,k} · expert_{e_{t,k}}(x[t])} [T, D], forward and backward.
 * Implementations: {@link FullExperts} (E SwiGLU experts, optional per-expert LoRA) and the low-rank experts of a
 * model converted by {@code surgery lowrank} ({@link LowRankFactorised}, with {@link LowRankNaive} as its
 * reference), and the CP- and TR-form experts of {@code surgery lowrank --form cp|tr} ({@link CpExperts}, its factors'
 * gradients in {@link ExpertGradients#cp()}; {@link TrExperts}, its cores' in {@link ExpertGradients#tr()}). FLOAT or DOUBLE (gradient checks), one type for all arrays. Stateless per call: what the backward
 * pass needs travels in the {@link Pass}, so one instance serves concurrent Spark tasks.
 */
public interface ExpertFfn {

    /** What a forward pass produced and keeps for its backward pass. */
    interface Pass {
        /** @return out [T, D] */
        INDArray out();

        /**
         * Frees the native buffers this pass keeps for {@link #backward} (not {@link #out()}) now, instead of when
         * the garbage collector finds them; the backward does it once it ran. Nothing may run the backward of a
         * released pass. (An inference forward leaves its pass to the collector: freeing it on the task's thread
         * measured no faster in the eval forward, deploy/bench/ForwardBench.java.)
         */
        default void release() {
        }
    }

    /** E. */
    int experts();

    /** D. */
    int hidden();

    DataType dataType();

    /** x [T, D] routed by {@code routes} → the pass with out [T, D]. */
    Pass forward(INDArray x, Routes routes);

    /**
     * Gradients from dOut [T, D] = dL/dout, in exact reverse order of the forward pass; base weights frozen. May
     * {@link Pass#release} the pass: one backward per pass.
     */
    ExpertGradients backward(Pass pass, INDArray dOut);
}
