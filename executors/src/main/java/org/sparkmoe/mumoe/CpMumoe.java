package org.sparkmoe.mumoe;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * CP μMoE, batched over T tokens with ND4J matrix products, at O(T·R·(Σ N_l + I + O)) and never building W:
 * <pre>
 *   a_l = act(x·G_l)                  // [T, N_l]  one gate per level
 *   p_l = a_l·U⁽ᴺˡ⁾                   // [T, R]    the gates in the rank space
 *   q   = x·U⁽ᴵ⁾                      // [T, R]
 *   h   = q ⊙ Π_l p_l                 // [T, R]
 *   y   = h·U⁽ᴼ⁾ᵀ                     // [T, O]
 * </pre>
 * which per token is y = U⁽ᴼ⁾((U⁽ᴺ¹⁾ᵀa₁) ⊙ ... ⊙ (U⁽ᴵ⁾ᵀx)) = Σ_{n} a₁(n₁)···a_L(n_L) · W(n, :, :)ᵀx.
 * {@link CpMumoeNaive} is its reference.
 */
public final class CpMumoe implements MumoeLayer {
    private final CpWeights w;
    private final GateActivation gate;

    public CpMumoe(CpWeights w, GateActivation gate) {
        this.w = w;
        this.gate = gate;
    }


    @Override
    public CpWeights weights() {
        return w;
    }

    @Override
    public MumoePass forward(INDArray x) {
        MumoeShapes.requireInput(CpWeights.LAYER, x, w.inputSize(), w.dataType());
        List<INDArray> a = new ArrayList<>();
        Map<String, INDArray> saved = new LinkedHashMap<>();
        INDArray q = Nd4j.gemm(x, w.in(), false, false);              // [T, R]
        INDArray h = q.dup();                                          // [T, R]
        for (int l = 0; l < w.levels(); l++) {
            INDArray al = gate.forward(x, w.gates().get(l));           // [T, N_l]
            INDArray pl = Nd4j.gemm(al, w.experts().get(l), false, false); // [T, R]
            h.muli(pl);
            a.add(al);
            saved.put("p." + l, pl);
        }
        INDArray y = Nd4j.gemm(h, w.out(), false, true);               // [T, O]
        saved.put("q", q);
        saved.put("h", h);
        return new MumoePass(x, y, a, saved);
    }

    @Override
    public MumoeGradients backward(MumoePass pass, INDArray dy) {
        MumoeShapes.requireOutputGradient(CpWeights.LAYER, dy, pass.tokens(), w.outputSize(), w.dataType());
        INDArray x = pass.x();
        INDArray q = pass.saved().get("q");                            // [T, R]
        INDArray h = pass.saved().get("h");                            // [T, R]
        int levels = w.levels();
        INDArray[] p = new INDArray[levels];                           // [T, R] each
        for (int l = 0; l < levels; l++) {
            p[l] = pass.saved().get("p." + l);
        }
        // y = h·U⁽ᴼ⁾ᵀ
        INDArray dOut = Nd4j.gemm(dy, h, true, false);                 // [O, R]
        INDArray dh = Nd4j.gemm(dy, w.out(), false, false);            // [T, R]
        // h = q ⊙ Π_l p_l
        INDArray dq = dh.dup();                                        // [T, R]
        for (INDArray pl : p) {
            dq.muli(pl);
        }
        INDArray[] dp = new INDArray[levels];                          // [T, R] each: dh ⊙ q ⊙ Π_{m≠l} p_m
        for (int l = 0; l < levels; l++) {
            dp[l] = dh.mul(q);
            for (int m = 0; m < levels; m++) {
                if (m != l) {
                    dp[l].muli(p[m]);
                }
            }
        }
        // q = x·U⁽ᴵ⁾
        INDArray dIn = Nd4j.gemm(x, dq, true, false);                  // [I, R]
        INDArray dx = Nd4j.gemm(dq, w.in(), false, true);              // [T, I]
        // p_l = a_l·U⁽ᴺˡ⁾, a_l = act(x·G_l), levels in reverse
        INDArray[] dExpert = new INDArray[levels];
        INDArray[] dGate = new INDArray[levels];
        for (int l = levels - 1; l >= 0; l--) {
            INDArray al = pass.gates().get(l);                         // [T, N_l]
            dExpert[l] = Nd4j.gemm(al, dp[l], true, false);            // [N_l, R]
            INDArray da = Nd4j.gemm(dp[l], w.experts().get(l), false, true); // [T, N_l]
            dGate[l] = gate.backward(x, w.gates().get(l), al, da, dx); // [I, N_l]
        }
        Map<String, INDArray> g = new LinkedHashMap<>();
        for (int l = 0; l < levels; l++) {
            g.put("gate." + l, dGate[l]);
        }
        for (int l = 0; l < levels; l++) {
            g.put("expert." + l, dExpert[l]);
        }
        g.put("in", dIn);
        g.put("out", dOut);
        return new MumoeGradients(g, dx);
    }
}
