package org.sparkmoe.mumoe;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Tensor-ring μMoE with L ≥ 1 expert levels, batched over T tokens, never building W. With the ranks r1..r_{L+2} and
 * the cores laid out as matrices
 * <pre>
 *   Ān_l = A_Nl permuted to [N_l, r_l·r_{l+1}]        row n = A_Nl[:, n, :]
 *   Āi   = A_I  permuted to [I, r_{L+1}·r_{L+2}]      row i = A_I[:, i, :]
 *   Āo   = A_O  permuted to [r1·r_{L+2}, O]           column o, entry (a, c) = A_O[c, o, a]
 * </pre>
 * the forward pass is
 * <pre>
 *   a_l = act(x·G_l)                  // [T, N_l]                one gate per level
 *   P_l = a_l·Ān_l                    // [T, r_l, r_{l+1}]       Σ_n a_l(n)·A_Nl[:, n, :] per token
 *   Q_1 = P_1, Q_l = Q_{l-1}·P_l      // [T, r1, r_{l+1}]        per token
 *   Pi  = x·Āi                        // [T, r_{L+1}, r_{L+2}]   Σ_i x(i)·A_I[:, i, :] per token
 *   M   = Q_L·Pi (per token)          // [T, r1, r_{L+2}]
 *   y   = M·Āo                        // [T, O]                  y(o) = trace(M·A_O[:, o, :])
 * </pre>
 * which per token is Σ_n a_1(n_1)···a_L(n_L) · W(n, :, :)ᵀx, at O(T·(Σ_l N_l·r_l·r_{l+1} + Σ_l r1·r_l·r_{l+1} +
 * I·r_{L+1}·r_{L+2} + O·r1·r_{L+2})): linear in Σ N_l, never Π N_l. {@link TrMumoeNaive} is its reference.
 */
public final class TrMumoe implements MumoeLayer {
    private final TrWeights w;
    private final GateActivation gate;

    public TrMumoe(TrWeights w, GateActivation gate) {
        this.w = w;
        this.gate = gate;
    }

    @Override
    public TrWeights weights() {
        return w;
    }

    /** Ān_l [N_l, r_l·r_{l+1}]. */
    private INDArray expertMatrix(int l) {
        INDArray core = w.experts().get(l);
        return core.permute(1, 0, 2).dup('c').reshape('c', core.size(1), core.size(0) * core.size(2));
    }

    /** Āi [I, r_{L+1}·r_{L+2}]. */
    private INDArray inMatrix() {
        return w.in().permute(1, 0, 2).dup('c').reshape('c', w.inputSize(), w.in().size(0) * w.in().size(2));
    }

    /** Āo [r1·r_{L+2}, O]. */
    private INDArray outMatrix() {
        return w.out().permute(2, 0, 1).dup('c').reshape('c', w.out().size(2) * w.out().size(0), w.outputSize());
    }

    @Override
    public MumoePass forward(INDArray x) {
        MumoeShapes.requireInput(TrWeights.LAYER, x, w.inputSize(), w.dataType());
        long t = x.size(0);
        int levels = w.levels();
        List<INDArray> a = new ArrayList<>();
        Map<String, INDArray> saved = new LinkedHashMap<>();
        INDArray q = null;                                                         // [T, r1, r_{l+1}]
        for (int l = 0; l < levels; l++) {
            INDArray al = gate.forward(x, w.gates().get(l));                       // [T, N_l]
            INDArray pl = Nd4j.gemm(al, expertMatrix(l), false, false)
                    .reshape('c', t, w.rank(l), w.rank(l + 1));                    // [T, r_l, r_{l+1}]
            q = l == 0 ? pl : Nd4j.matmul(q, pl);
            a.add(al);
            saved.put("P." + l, pl);
            saved.put("Q." + l, q);
        }
        INDArray pi = Nd4j.gemm(x, inMatrix(), false, false)
                .reshape('c', t, w.rank(levels), w.rank(levels + 1));             // [T, r_{L+1}, r_{L+2}]
        INDArray m = Nd4j.matmul(q, pi).reshape('c', t, w.rank(0) * w.rank(levels + 1)); // [T, r1·r_{L+2}]
        INDArray y = Nd4j.gemm(m, outMatrix(), false, false);                      // [T, O]
        saved.put("Pi", pi);
        saved.put("M", m);
        return new MumoePass(x, y, a, saved);
    }

    @Override
    public MumoeGradients backward(MumoePass pass, INDArray dy) {
        MumoeShapes.requireOutputGradient(TrWeights.LAYER, dy, pass.tokens(), w.outputSize(), w.dataType());
        long t = pass.tokens();
        int levels = w.levels();
        long r1 = w.rank(0);
        long rIn = w.rank(levels);                                                 // r_{L+1}
        long rOut = w.rank(levels + 1);                                            // r_{L+2}
        INDArray x = pass.x();                                                     // [T, I]
        INDArray pi = pass.saved().get("Pi");                                      // [T, r_{L+1}, r_{L+2}]
        INDArray m = pass.saved().get("M");                                        // [T, r1·r_{L+2}]
        // y = M·Āo
        INDArray dOut = Nd4j.gemm(m, dy, true, false)                              // [r1·r_{L+2}, O]
                .reshape('c', r1, rOut, w.outputSize()).permute(1, 2, 0).dup('c'); // [r_{L+2}, O, r1]
        INDArray dm = Nd4j.gemm(dy, outMatrix(), false, true).reshape('c', t, r1, rOut); // [T, r1, r_{L+2}]
        // M = Q_L·Pi per token
        INDArray dq = Nd4j.matmul(dm, pi, false, true, false);                    // [T, r1, r_{L+1}]
        INDArray dpi = Nd4j.matmul(pass.saved().get("Q." + (levels - 1)), dm, true, false, false)
                .reshape('c', t, rIn * rOut);                                      // [T, r_{L+1}·r_{L+2}]
        // Pi = x·Āi
        INDArray dIn = Nd4j.gemm(x, dpi, true, false)
                .reshape('c', w.inputSize(), rIn, rOut).permute(1, 0, 2).dup('c'); // [r_{L+1}, I, r_{L+2}]
        INDArray dx = Nd4j.gemm(dpi, inMatrix(), false, true);                    // [T, I]
        // Q_l = Q_{l-1}·P_l, levels in reverse; then P_l = a_l·Ān_l and a_l = act(x·G_l)
        INDArray[] dExpert = new INDArray[levels];
        INDArray[] dGate = new INDArray[levels];
        for (int l = levels - 1; l >= 0; l--) {
            INDArray pl = pass.saved().get("P." + l);                             // [T, r_l, r_{l+1}]
            INDArray dp = l == 0 ? dq
                    : Nd4j.matmul(pass.saved().get("Q." + (l - 1)), dq, true, false, false); // [T, r_l, r_{l+1}]
            if (l > 0) {
                dq = Nd4j.matmul(dq, pl, false, true, false);                     // [T, r1, r_l]
            }
            INDArray dpFlat = dp.reshape('c', t, w.rank(l) * w.rank(l + 1));      // [T, r_l·r_{l+1}]
            INDArray core = w.experts().get(l);                                    // [r_l, N_l, r_{l+1}]
            INDArray al = pass.gates().get(l);                                     // [T, N_l]
            dExpert[l] = Nd4j.gemm(al, dpFlat, true, false)
                    .reshape('c', core.size(1), core.size(0), core.size(2)).permute(1, 0, 2).dup('c');
            INDArray da = Nd4j.gemm(dpFlat, expertMatrix(l), false, true);         // [T, N_l]
            dGate[l] = gate.backward(x, w.gates().get(l), al, da, dx);             // [I, N_l]
        }
        Map<String, INDArray> g = new LinkedHashMap<>();
        for (int l = 0; l < levels; l++) {
            g.put("gate." + l, dGate[l]);
        }
        for (int l = 0; l < levels; l++) {
            g.put(TrWeights.expertName(l, levels), dExpert[l]);
        }
        g.put("core.in", dIn);
        g.put("core.out", dOut);
        return new MumoeGradients(g, dx);
    }
}
