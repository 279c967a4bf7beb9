package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;

/**
 * The shared expert of an MoE block, frozen, run for every token: Qwen2-MoE's gated one,
 * {@code out += sigmoid(x·Wsgᵀ) ⊙ mlp(x)} [T, D], or the ungated one of GLM-4.5 and DeepSeek
 * ({@code n_shared_experts} experts as one MLP of n_shared·moe_intermediate_size), {@code out += mlp(x)}. In FLOAT
 * the sum is rounded as a float32 computation rounds.
 */
public final class SharedExpert {
    private final SwiGluMlp mlp;
    private final INDArray gate;   // [1, D], null when ungated

    /** A gated shared expert (Qwen2-MoE): both are required. */
    public SharedExpert(SwiGluMlp mlp, INDArray gate) {
        if (mlp == null || gate == null) {
            throw new IllegalArgumentException("a shared expert needs its gate and a gate its expert, got expert "
                    + (mlp == null ? "null" : "present") + ", gate "
                    + (gate == null ? "null" : Arrays.toString(gate.shape())));
        }
        this.mlp = mlp;
        this.gate = gate;
    }

    private SharedExpert(SwiGluMlp mlp) {
        if (mlp == null) {
            throw new IllegalArgumentException("an ungated shared expert needs its MLP, got null");
        }
        this.mlp = mlp;
        this.gate = null;
    }

    /** An ungated shared expert (GLM-4.5, DeepSeek): its output is added as it is. */
    public static SharedExpert ungated(SwiGluMlp mlp) {
        return new SharedExpert(mlp);
    }

    /** Throws unless the gate (when gated) is [1, D] of the block's hidden size and data type. */
    public void checkFits(int hidden, DataType dataType) {
        if (gate == null) {
            return;
        }
        if (gate.rank() != 2 || gate.size(0) != 1 || gate.size(1) != hidden || gate.dataType() != dataType) {
            throw new IllegalArgumentException("shared expert gate must be [1, D] = [1, " + hidden + "] "
                    + dataType + ", got " + Arrays.toString(gate.shape()) + " " + gate.dataType());
        }
    }

    /**
     * What the backward pass needs.
     *
     * @param mlp   the SwiGLU's forward
     * @param gates [T] sigmoid(x·Wsgᵀ), null when ungated
     */
    public record Pass(SwiGluMlp.Context mlp, double[] gates) {
    }

    /** Adds sigmoid(x·Wsgᵀ) ⊙ mlp(x) (gated) or mlp(x) (ungated) to {@code out [T·D]}; x [T, D]. */
    public Pass addTo(INDArray x, double[] out, boolean single) {
        int tokens = (int) x.size(0);
        int hidden = (int) x.size(1);
        SwiGluMlp.Context shared = mlp.forwardTraining(x);                              // [T, D]
        double[] ys = Flat.values(shared.out());
        if (gate == null) {
            for (int at = 0; at < out.length; at++) {
                out[at] = Flat.round(out[at] + ys[at], single);
            }
            return new Pass(shared, null);
        }
        double[] gates = Flat.values(Dense.linear(x, gate));                             // [T] logits
        for (int t = 0; t < tokens; t++) {
            gates[t] = Flat.round(1.0 / (1.0 + Math.exp(-gates[t])), single);
            for (int d = 0; d < hidden; d++) {
                int at = t * hidden + d;
                out[at] = Flat.round(out[at] + Flat.round(gates[t] * ys[at], single), single);
            }
        }
        return new Pass(shared, gates);
    }

    /**
     * dshared = σ·dOut, dgate logit = σ(1 − σ)·Σ dOut ⊙ shared (ungated: dshared = dOut); adds dL/dx to
     * {@code dx [T, D]}.
     *
     * @param dOut [T, D]
     */
    public void backward(Pass pass, INDArray dOut, INDArray dx) {
        if (pass.gates() == null) {
            dx.addi(mlp.backward(pass.mlp(), dOut));
            return;
        }
        int tokens = (int) dOut.size(0);
        int hidden = (int) dOut.size(1);
        double[] dy = Flat.values(dOut);
        double[] ys = Flat.values(pass.mlp().out());
        double[] dShared = new double[tokens * hidden];                                  // [T, D]
        double[] dGateLogits = new double[tokens];                                       // [T, 1]
        for (int t = 0; t < tokens; t++) {
            double sig = pass.gates()[t];
            double dot = 0;
            for (int d = 0; d < hidden; d++) {
                dShared[t * hidden + d] = sig * dy[t * hidden + d];
                dot += dy[t * hidden + d] * ys[t * hidden + d];
            }
            dGateLogits[t] = dot * sig * (1 - sig);
        }
        dx.addi(mlp.backward(pass.mlp(), Flat.array(dShared, dOut.shape(), dOut.dataType())));
        Nd4j.gemm(Flat.array(dGateLogits, new long[] {tokens, 1}, dOut.dataType()), gate, dx, false, false, 1.0, 1.0);
    }
}
