package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

/**
 * The memory accounting: what a forward pass really allocates equals the closed form, and at the
 * "low-rank-100x" benchmark case (T=1024, D=512, I=2048, E=128, K=2, R=4, float32) the naive per-token
 * weights need at least 50× the bytes of the factorised form.
 */
class LowRankMemoryTest {

    @ParameterizedTest(name = "T {0}, D {1}, I {2}, E {3}, K {4}, R {5}, {6}")
    @CsvSource({"7, 6, 5, 8, 2, 2, FLOAT", "7, 6, 5, 8, 2, 2, DOUBLE", "33, 16, 24, 12, 3, 4, FLOAT",
            "20, 24, 8, 5, 5, 3, DOUBLE", "1, 6, 5, 8, 1, 2, FLOAT"})
    void forwardAllocatesWhatItReports(int t, int d, int i, int e, int k, int r, DataType dt) {
        LowRankWeights w = LowRankWeights.random(d, i, e, r, 2.0, 0.5, dt, 5);
        INDArray x = LowRankAdapters.uniform(new java.util.Random(6), dt, 1.0, t, d);
        Routes routes = routes(x, e, k);
        LowRankExperts factorised = new LowRankFactorised(w, new Nd4jGroupedGemm());
        LowRankExperts naive = new LowRankNaive(w);
        assertEquals(factorised.forwardBytes(t, d, i, e, k, r, dt), allocated(factorised, x, routes), "factorised");
        assertEquals(naive.forwardBytes(t, d, i, e, k, r, dt), allocated(naive, x, routes), "naive");
        LowRankWeights biased = w.withRandomBiases(GatedActivation.CLAMPED_SWIGLU, 0.5, 8);   // gpt-oss: + G [T, E]
        assertEquals(factorised.forwardBytes(t, d, i, e, k, r, dt) + (long) t * e * dt.width(),
                allocated(factorised.with(biased), x, routes), "factorised with biases");
        assertEquals(naive.forwardBytes(t, d, i, e, k, r, dt) + (long) t * e * dt.width(),
                allocated(naive.with(biased), x, routes), "naive with biases");
    }

    /** Routes from a random gate U(−1/√D, 1/√D): softmax, top-K, renormalised. */
    private static Routes routes(INDArray x, int e, int k) {
        INDArray gate = LowRankAdapters.uniform(new java.util.Random(7), x.dataType(), 1 / Math.sqrt(x.size(1)), e,
                x.size(1));
        return new Router(gate).route(x.mmul(gate.transpose()), RoutingRule.softmaxTopK(k, true));
    }

    private static long allocated(LowRankExperts experts, INDArray x, Routes routes) {
        return ((LowRankPass) experts.forward(x, routes)).allocatedBytes();
    }

    @Test
    void lowRank100xCase() {
        int t = 1024;
        int d = 512;
        int i = 2048;
        int e = 128;
        int k = 2;
        int r = 4;
        DataType dt = DataType.FLOAT;
        LowRankWeights w = LowRankWeights.random(d, i, e, r, 2.0, 0.05, dt, 9);
        LowRankExperts factorised = new LowRankFactorised(w, new Nd4jGroupedGemm());
        LowRankExperts naive = new LowRankNaive(w);
        long factorisedBytes = factorised.forwardBytes(t, d, i, e, k, r, dt);
        long naiveBytes = naive.forwardBytes(t, d, i, e, k, r, dt);
        double ratio = (double) naiveBytes / factorisedBytes;
        System.out.printf("low-rank-100x float32: naive %d bytes (%.2f GiB), factorised %d bytes (%.1f MiB), "
                        + "ratio %.1f; parameters: base %d, trainable (LoRA + router) %d, dense MoE with %d experts %d%n",
                naiveBytes, naiveBytes / (double) (1L << 30), factorisedBytes, factorisedBytes / (double) (1L << 20),
                ratio, LowRankWeights.baseParameters(d, i), LowRankWeights.trainableParameters(d, i, e, r),
                e, LowRankWeights.denseMoeParameters(d, i, e));
        assertTrue(ratio >= 50, "naive / factorised bytes " + ratio + " must be ≥ 50");

        // the factorised forward at full size really allocates what the accounting says
        INDArray x = LowRankAdapters.uniform(new java.util.Random(10), dt, 1.0, t, d);
        assertEquals(factorisedBytes, allocated(factorised, x, routes(x, e, k)));
        assertEquals(3L * e * r * (d + i), w.adapters().parameterCount());
    }
}
