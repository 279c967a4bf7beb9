package org.sparkmoe.mumoe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.GradientCheck;

/**
 * N = 4096 experts of I = O = 512: CP stores R·(N + I + O) expert parameters where a materialised W holds N·I·O
 * (1.07e9, 4 GiB in float32), and the layer runs a forward and backward pass without ever building W.
 */
class MumoeParameterCountTest {
    static final long I = 512;
    static final long O = 512;
    static final long N = 4096;

    @Test
    void cpCostsRankTimesTheSumOfTheModes() {
        long r = 64;
        CpMumoe layer = new CpMumoe(CpWeights.random(new Random(1), DataType.FLOAT, I, O, r, N),
                GateActivation.SOFTMAX);
        assertEquals(r * (N + I + O), layer.weights().expertParameterCount());            // 327,680
        assertEquals(I * N, layer.weights().gateParameterCount());
        assertEquals(N * I * O, layer.weights().materialisedExpertParameterCount());       // 1,073,741,824
        assertTrue(layer.weights().materialisedExpertParameterCount() / layer.weights().expertParameterCount() > 3000);
        runs(layer);
    }

    @Test
    void hierarchicalCpSplitsTheExpertMode() {
        long r = 64;
        CpMumoe layer = new CpMumoe(CpWeights.random(new Random(2), DataType.FLOAT, I, O, r, 64, 64),
                GateActivation.SOFTMAX);
        assertArrayEquals(new long[] {64, 64}, layer.weights().expertDims());
        assertEquals(r * (64 + 64 + I + O), layer.weights().expertParameterCount());
        assertEquals(I * (64 + 64), layer.weights().gateParameterCount());
        assertEquals(N * I * O, layer.weights().materialisedExpertParameterCount());
        runs(layer);
    }

    @Test
    void trCostsTheThreeCores() {
        long r1 = 8;
        long r2 = 8;
        long r3 = 8;
        TrMumoe layer = new TrMumoe(TrWeights.random(new Random(3), DataType.FLOAT, I, O, new long[] {N}, r1, r2, r3),
                GateActivation.SOFTMAX);
        assertEquals(r1 * N * r2 + r2 * I * r3 + r3 * O * r1, layer.weights().expertParameterCount()); // 327,680
        assertEquals(N * I * O, layer.weights().materialisedExpertParameterCount());
        runs(layer);
    }

    @Test
    void hierarchicalTrCostsOneCorePerLevel() {
        long r = 8;
        TrMumoe layer = new TrMumoe(TrWeights.random(new Random(5), DataType.FLOAT, I, O, new long[] {64, 64},
                r, r, r, r), GateActivation.SOFTMAX);
        assertArrayEquals(new long[] {64, 64}, layer.weights().expertDims());
        assertEquals(r * r * (64 + 64 + I + O), layer.weights().expertParameterCount());    // 73,728
        assertEquals(I * (64 + 64), layer.weights().gateParameterCount());
        assertEquals(N * I * O, layer.weights().materialisedExpertParameterCount());
        runs(layer);
    }

    private static void runs(MumoeLayer layer) {
        INDArray x = GradientCheck.gaussian(new Random(4), DataType.FLOAT, 1.0, 4, I);
        MumoePass pass = layer.forward(x);
        assertArrayEquals(new long[] {4, O}, pass.y().shape());
        for (int l = 0; l < layer.weights().expertDims().length; l++) {
            INDArray a = pass.gates().get(l);
            assertEquals(4.0, a.sumNumber().doubleValue(), 1e-4, "every token's gate sums to 1");
        }
        MumoeGradients g = layer.backward(pass, pass.y());
        assertArrayEquals(new long[] {4, I}, g.dx().shape());
        assertTrue(Double.isFinite(g.dx().sumNumber().doubleValue()));
    }
}
