package org.sparkmoe.mumoe;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Tensor-ring μMoE, batched over T tokens, never building W. With the cores laid out as matrices
 * <pre>
 *   Ān = A_N permuted to [N, r1·r2]   row n = A_N[:, n, :]
 *   Āi = A_I permuted to [I, r2·r3]   row i = A_I[:, i, :]
 *   Āo = A_O permuted to [r1·r3, O]   column o, entry (a, c) = A_O[c, o, a]
 * </pre>
 * the forward pass is
 * <pre>
 *   a  = softmax(x·G)                 // [T, N]
 *   Pn = a·Ān                         // [T, r1, r2]  Σ_n a(n)·A_N[:, n, :] per token
 *   Pi = x·Āi                         // [T, r2, r3]  Σ_i x(i)·A_I[:, i, :] per token
 *   M  = Pn·Pi (per token)            // [T, r1, r3]
 *   y  = M·Āo                         // [T, O]       y(o) = trace(M·A_O[:, o, :])
 * </pre>
 * at O(T·(N·r1·r2 + I·r2·r3 + r1·r2·r3 + O·r1·r3)). {@link TrMumoeNaive} is its reference.
 */
public final class TrMumoe implements MumoeLayer {
    private final TrWeights w;

    public TrMumoe(TrWeights w) {
        this.w = w;
    }


    @Override
    public TrWeights weights() {
        return w;
    }

    /** Ān [N, r1·r2]. */
    private INDArray expertMatrix() {
        return w.expert().permute(1, 0, 2).dup('c').reshape('c', w.experts(), w.r1() * w.r2());
    }

    /** Āi [I, r2·r3]. */
    private INDArray inMatrix() {
        return w.in().permute(1, 0, 2).dup('c').reshape('c', w.inputSize(), w.r2() * w.r3());
    }

    /** Āo [r1·r3, O]. */
    private INDArray outMatrix() {
        return w.out().permute(2, 0, 1).dup('c').reshape('c', w.r1() * w.r3(), w.outputSize());
    }

    @Override
    public MumoePass forward(INDArray x) {
        MumoeShapes.requireInput(TrWeights.LAYER, x, w.inputSize(), w.dataType());
        long t = x.size(0);
        INDArray a = SoftmaxGate.forward(x, w.gate());                             // [T, N]
        INDArray pn = Nd4j.gemm(a, expertMatrix(), false, false)
                .reshape('c', t, w.r1(), w.r2());                                  // [T, r1, r2]
        INDArray pi = Nd4j.gemm(x, inMatrix(), false, false)
                .reshape('c', t, w.r2(), w.r3());                                  // [T, r2, r3]
        INDArray m = Nd4j.matmul(pn, pi).reshape('c', t, w.r1() * w.r3());        // [T, r1·r3]
        INDArray y = Nd4j.gemm(m, outMatrix(), false, false);                      // [T, O]
        return new MumoePass(x, y, List.of(a), Map.of("Pn", pn, "Pi", pi, "M", m));
    }

    @Override
    public MumoeGradients backward(MumoePass pass, INDArray dy) {
        MumoeShapes.requireOutputGradient(TrWeights.LAYER, dy, pass.tokens(), w.outputSize(), w.dataType());
        long t = pass.tokens();
        INDArray x = pass.x();                                                     // [T, I]
        INDArray a = pass.gates().get(0);                                          // [T, N]
        INDArray pn = pass.saved().get("Pn");                                      // [T, r1, r2]
        INDArray pi = pass.saved().get("Pi");                                      // [T, r2, r3]
        INDArray m = pass.saved().get("M");                                        // [T, r1·r3]
        // y = M·Āo
        INDArray dOutMatrix = Nd4j.gemm(m, dy, true, false);                       // [r1·r3, O]
        INDArray dOut = dOutMatrix.reshape('c', w.r1(), w.r3(), w.outputSize())
                .permute(1, 2, 0).dup('c');                                        // [r3, O, r1]
        INDArray dm = Nd4j.gemm(dy, outMatrix(), false, true)
                .reshape('c', t, w.r1(), w.r3());                                  // [T, r1, r3]
        // M = Pn·Pi per token
        INDArray dpn = Nd4j.matmul(dm, pi, false, true, false)
                .reshape('c', t, w.r1() * w.r2());                                 // [T, r1·r2]
        INDArray dpi = Nd4j.matmul(pn, dm, true, false, false)
                .reshape('c', t, w.r2() * w.r3());                                 // [T, r2·r3]
        // Pi = x·Āi
        INDArray dIn = Nd4j.gemm(x, dpi, true, false)
                .reshape('c', w.inputSize(), w.r2(), w.r3()).permute(1, 0, 2).dup('c'); // [r2, I, r3]
        INDArray dx = Nd4j.gemm(dpi, inMatrix(), false, true);                    // [T, I]
        // Pn = a·Ān
        INDArray dExpert = Nd4j.gemm(a, dpn, true, false)
                .reshape('c', w.experts(), w.r1(), w.r2()).permute(1, 0, 2).dup('c'); // [r1, N, r2]
        INDArray da = Nd4j.gemm(dpn, expertMatrix(), false, true);                 // [T, N]
        // a = softmax(x·G)
        INDArray dGate = SoftmaxGate.backward(x, w.gate(), a, da, dx);             // [I, N]
        Map<String, INDArray> g = new LinkedHashMap<>();
        g.put("gate.0", dGate);
        g.put("core.expert", dExpert);
        g.put("core.in", dIn);
        g.put("core.out", dOut);
        return new MumoeGradients(g, dx);
    }
}
