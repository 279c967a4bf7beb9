package org.sparkmoe.experts;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Workers;

/**
 * A dense SwiGLU FFN: {@code y = (silu(x·Wgᵀ) ⊙ (x·Wuᵀ)) · Wdᵀ} (Mistral MLP, Qwen2-MoE shared expert). The
 * training pair ({@link #forwardTraining}, {@link #backward}) takes FLOAT or DOUBLE, is bit-identical to
 * {@link #forward} in FLOAT, and keeps the weights frozen (only the input gets a gradient).
 */
public final class SwiGluMlp {
    private final INDArray gateProj; // [I, D]
    private final INDArray upProj;   // [I, D]
    private final INDArray downProj; // [D, I]

    public SwiGluMlp(INDArray gateProj, INDArray upProj, INDArray downProj) {
        this.gateProj = gateProj;
        this.upProj = upProj;
        this.downProj = downProj;
    }

    /** @return [I, D] */
    public INDArray gateProj() {
        return gateProj;
    }

    /** @return [I, D] */
    public INDArray upProj() {
        return upProj;
    }

    /** @return [D, I] */
    public INDArray downProj() {
        return downProj;
    }

    /** x [T, D] → [T, D]. */
    public INDArray forward(INDArray x) {
        INDArray act = Activations.swiGlu(Dense.linear(x, gateProj), Dense.linear(x, upProj)); // [T, I]
        return Dense.linear(act, downProj);
    }

    /**
     * The forward result and what {@link #backward} needs.
     *
     * @param x   [T, D]
     * @param g   [T, I] x·Wgᵀ
     * @param u   [T, I] x·Wuᵀ
     * @param out [T, D]
     */
    public record Context(INDArray x, INDArray g, INDArray u, INDArray out) {
    }

    /** x [T, D] → Context with out [T, D]. */
    public Context forwardTraining(INDArray x) {
        INDArray g = Dense.linear(x, gateProj);                           // [T, I]
        INDArray u = Dense.linear(x, upProj);                             // [T, I]
        INDArray act = Activations.swiGlu(g, u);                         // [T, I]
        return new Context(x, g, u, Dense.linear(act, downProj));         // [T, D]
    }

    /** @param dOut [T, D] @return dx [T, D] */
    public INDArray backward(Context ctx, INDArray dOut) {
        INDArray dAct = Dense.linearBackward(dOut, downProj);             // [T, I]
        INDArray[] dh = Activations.swiGluBackward(ctx.g(), ctx.u(), dAct, Workers.SERIAL); // dg, du [T, I]
        INDArray dx = Dense.linearBackward(dh[1], upProj);                // [T, D]
        return dx.addi(Dense.linearBackward(dh[0], gateProj));
    }

}
