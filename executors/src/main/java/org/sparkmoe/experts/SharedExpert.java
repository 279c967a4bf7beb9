package org.sparkmoe.experts;

import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.kernels.WeightStack;

/**
 * The shared expert of an MoE block, run for every token: Qwen2-MoE's gated one,
 * {@code out += sigmoid(x·Wsgᵀ) ⊙ mlp(x)} [T, D], or the ungated one of GLM-4.5 and DeepSeek
 * ({@code n_shared_experts} experts as one MLP of n_shared·moe_intermediate_size = S), {@code out += mlp(x)}. The MLP
 * is an {@link ExpertRows} of one expert over all T rows, so its frozen weights take the dense products' tiles and
 * optional LoRA on gate/up/down ({@link LoraExperts} of E = 1) goes through the routed experts' code:
 * <pre>
 *   h1  = x·Wgᵀ + s·(x·A1ᵀ)·B1ᵀ          [T, S]   (gate_proj)
 *   h3  = x·Wuᵀ + s·(x·A3ᵀ)·B3ᵀ          [T, S]   (up_proj)
 *   y   = (silu(h1) ⊙ h3)·Wdᵀ + s·(…)    [T, D]   (down_proj)
 * </pre>
 * The gate Wsg [1, D] stays frozen. In FLOAT the sum is rounded as a float32 computation rounds.
 */
public final class SharedExpert {
    private static final GroupedGemm GEMM = new Nd4jGroupedGemm(); // serial, as Dense's products

    private final ExpertWeights weights; // w1, w3 [1, S, D], w2 [1, D, S]
    private final ExpertRows rows;
    private final INDArray gate;         // [1, D], null when ungated

    /** A gated shared expert (Qwen2-MoE): both are required. */
    public SharedExpert(SwiGluMlp mlp, INDArray gate) {
        if (mlp == null || gate == null) {
            throw new IllegalArgumentException("a shared expert needs its gate and a gate its expert, got expert "
                    + (mlp == null ? "null" : "present") + ", gate "
                    + (gate == null ? "null" : Arrays.toString(gate.shape())));
        }
        this.weights = oneExpert(mlp);
        this.rows = new ExpertRows(weights, null, null, null, GEMM);
        this.gate = gate;
    }

    private SharedExpert(ExpertWeights weights, LoraExperts gateLora, LoraExperts upLora, LoraExperts downLora,
                         INDArray gate) {
        this.weights = weights;
        this.rows = new ExpertRows(weights, gateLora, upLora, downLora, GEMM);
        this.gate = gate;
    }

    /** An ungated shared expert (GLM-4.5, DeepSeek): its output is added as it is. */
    public static SharedExpert ungated(SwiGluMlp mlp) {
        if (mlp == null) {
            throw new IllegalArgumentException("an ungated shared expert needs its MLP, got null");
        }
        return new SharedExpert(oneExpert(mlp), null, null, null, null);
    }

    private static ExpertWeights oneExpert(SwiGluMlp mlp) {
        return new ExpertWeights(WeightStack.of(List.of(mlp.gateProj())), WeightStack.of(List.of(mlp.upProj())),
                WeightStack.of(List.of(mlp.downProj())));
    }

    /**
     * The same shared expert with LoRA on the given projections (null: frozen), each of one expert: A [1, R, in],
     * B [1, out, R] in the compute type; throws when one does not fit its weight.
     */
    public SharedExpert withLora(LoraExperts gateLora, LoraExperts upLora, LoraExperts downLora) {
        return new SharedExpert(weights, gateLora, upLora, downLora, gate);
    }

    /** The MLP as one expert: w1, w3 [1, S, D], w2 [1, D, S]. */
    public ExpertWeights weights() {
        return weights;
    }

    /** Throws unless the MLP is of hidden size D and (when gated) the gate is [1, D], both of the block's type. */
    public void checkFits(int hidden, DataType dataType) {
        if (weights.hidden() != hidden || rows.dataType() != dataType) {
            throw new IllegalArgumentException("shared expert must be of hidden size " + hidden + " computing in "
                    + dataType + ", got " + weights.hidden() + " in " + rows.dataType());
        }
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
     * @param mlp   the MLP's forward over all T rows
     * @param gates [T] sigmoid(x·Wsgᵀ), null when ungated
     */
    public record Pass(ExpertRows.Context mlp, double[] gates) {
    }

    /**
     * The LoRA gradients of one backward pass, null for a projection without LoRA.
     *
     * @param gate dA [1, R, D], dB [1, S, R]
     * @param up   dA [1, R, D], dB [1, S, R]
     * @param down dA [1, R, S], dB [1, D, R]
     */
    public record Gradients(LoraGradients gate, LoraGradients up, LoraGradients down) {
    }

    /** Adds sigmoid(x·Wsgᵀ) ⊙ mlp(x) (gated) or mlp(x) (ungated) to {@code out [T·D]}; x [T, D]. */
    public Pass addTo(INDArray x, double[] out, boolean single) {
        int tokens = (int) x.size(0);
        int hidden = (int) x.size(1);
        ExpertRows.Context shared = rows.forward(x, new int[] {0, tokens});             // ys [T, D]
        double[] ys = Flat.values(shared.ys());
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
     * dshared = σ·dOut, dgate logit = σ(1 − σ)·Σ dOut ⊙ shared (ungated: dshared = dOut); the MLP in reverse; adds
     * dL/dx to {@code dx [T, D]}.
     *
     * @param dOut [T, D]
     * @return the LoRA gradients (all null when frozen)
     */
    public Gradients backward(Pass pass, INDArray dOut, INDArray dx) {
        INDArray dShared = dOut;                                                         // [T, D]
        INDArray dGateLogits = null;                                                     // [T, 1]
        if (pass.gates() != null) {
            int tokens = (int) dOut.size(0);
            int hidden = (int) dOut.size(1);
            double[] dy = Flat.values(dOut);
            double[] ys = Flat.values(pass.mlp().ys());
            double[] ds = new double[tokens * hidden];
            double[] dg = new double[tokens];
            for (int t = 0; t < tokens; t++) {
                double sig = pass.gates()[t];
                double dot = 0;
                for (int d = 0; d < hidden; d++) {
                    ds[t * hidden + d] = sig * dy[t * hidden + d];
                    dot += dy[t * hidden + d] * ys[t * hidden + d];
                }
                dg[t] = dot * sig * (1 - sig);
            }
            dShared = Flat.array(ds, dOut.shape(), dOut.dataType());
            dGateLogits = Flat.array(dg, new long[] {tokens, 1}, dOut.dataType());
        }
        ExpertRows.Gradients mlp = rows.backward(pass.mlp(), dShared);
        dx.addi(mlp.dxs());
        if (dGateLogits != null) {
            Nd4j.gemm(dGateLogits, gate, dx, false, false, 1.0, 1.0);
        }
        return new Gradients(mlp.gate(), mlp.up(), mlp.down());
    }
}
