package org.sparkmoe.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.experts.GradientCheck;

/** {@link LoadBalancingLoss} against hand-computed values of transformers' load_balancing_loss_func. */
class LoadBalancingLossTest {

    /**
     * Three tokens over two layers, E = 3, logits = log(p) (+1 on the second layer: softmax ignores a shift), so
     * softmax gives p1 = [.5,.3,.2], p2 = [.6,.1,.3] (layer 0) and p3 = [.25,.15,.6] (layer 1).
     * router_prob_per_expert = mean p = [1.35, .55, 1.1] / 3.
     * K = 1: top-1 = e0, e0, e2 → tokens_per_expert [[2/3, 0, 1/3]] → loss = 3·(2/3·1.35 + 1/3·1.1)/3 = 3.8/3.
     * K = 2: second choices e1, e2, e0 → tokens_per_expert [[2/3,0,1/3],[1/3,1/3,1/3]], summed over K
     * [1, 1/3, 2/3] → loss = 3·(1.35 + .55/3 + 2.2/3)/3 = 1.35 + 2.75/3.
     * The same numbers come from torch: load_balancing_loss_func((l0, l1), num_experts=3, top_k=K).
     */
    private static List<INDArray> handExample(DataType dt) {
        INDArray layer0 = Nd4j.create(new double[][] {
                {Math.log(.5), Math.log(.3), Math.log(.2)}, {Math.log(.6), Math.log(.1), Math.log(.3)}}).castTo(dt);
        INDArray layer1 = Nd4j.create(new double[][] {{Math.log(.25) + 1, Math.log(.15) + 1, Math.log(.6) + 1}})
                .castTo(dt);
        return List.of(layer0, layer1);
    }

    @Test
    void topOneMatchesHandComputedValue() {
        assertEquals(3.8 / 3, LoadBalancingLoss.of(handExample(DataType.DOUBLE), 3, 1).value(), 1e-14);
    }

    @Test
    void topTwoMatchesHandComputedValueAndSumsTheKEBroadcast() {
        assertEquals(1.35 + 2.75 / 3, LoadBalancingLoss.of(handExample(DataType.DOUBLE), 3, 2).value(), 1e-14);
        assertEquals(1.35 + 2.75 / 3, LoadBalancingLoss.of(handExample(DataType.FLOAT), 3, 2).value(), 1e-6);
    }

    @Test
    void uniformRouterGivesK() {
        // p = 1/E everywhere: Σ_e f_e = K and router_prob = 1/E, so the loss is E·K/E = K
        INDArray flat = Nd4j.zeros(DataType.DOUBLE, 5, 4);
        assertEquals(2.0, LoadBalancingLoss.of(List.of(flat), 4, 2).value(), 1e-14);
    }

    @Test
    void gradientMatchesFiniteDifferences() {
        Random rnd = new Random(21);
        List<INDArray> logits = List.of(GradientCheck.gaussian(rnd, DataType.DOUBLE, 1.5, 6, 4),
                GradientCheck.gaussian(rnd, DataType.DOUBLE, 1.5, 5, 4));
        double dLoss = 0.7;
        List<INDArray> grads = LoadBalancingLoss.of(logits, 4, 2).gradient(dLoss);
        for (int l = 0; l < logits.size(); l++) {
            GradientCheck.check("load balancing layer " + l, logits.get(l), grads.get(l),
                    () -> dLoss * LoadBalancingLoss.of(logits, 4, 2).value());
        }
    }

    /**
     * Row by row from native memory, the gradient is, bit for bit, the formula over the concatenated [L·T, E]
     * float64 probabilities (written out here as the class computed it before it streamed rows): for FLOAT layers,
     * one a view of rows of a larger array and one without tokens, and for DOUBLE layers, one a transposed
     * (column-major) view that is read through a copy.
     */
    @Test
    void rowByRowGradientIsTheConcatenatedFormulaBitForBit() {
        Random rnd = new Random(5);
        int e = 6;
        INDArray whole = GradientCheck.gaussian(rnd, DataType.DOUBLE, 2.0, 9, e).castTo(DataType.FLOAT);
        checkAgainstTheFormula(List.of(GradientCheck.gaussian(rnd, DataType.DOUBLE, 2.0, 7, e).castTo(DataType.FLOAT),
                Nd4j.create(DataType.FLOAT, 0, e), whole.get(NDArrayIndex.interval(3, 8), NDArrayIndex.all())), e);
        checkAgainstTheFormula(List.of(GradientCheck.gaussian(rnd, DataType.DOUBLE, 2.0, 4, e),
                GradientCheck.gaussian(rnd, DataType.DOUBLE, 2.0, e, 5).transpose()), e);
    }

    private static void checkAgainstTheFormula(List<INDArray> logits, int e) {
        int k = 2;
        int rows = (int) logits.stream().mapToLong(l -> l.size(0)).sum();
        double[] probs = new double[rows * e];
        int at = 0;
        for (INDArray layer : logits) {
            if (layer.length() == 0) {
                continue;
            }
            for (double v : layer.dup('c').data().asDouble()) {
                probs[at++] = v;
            }
        }
        double[] tokens = new double[e];
        double[] meanProb = new double[e];
        int[] chosen = new int[k];
        for (int n = 0; n < rows; n++) {
            org.sparkmoe.kernels.Softmax.row(probs, n * e, e, false);
            TopK.select(probs, n * e, e, k, null, chosen, 0);
            for (int best : chosen) {
                tokens[best] += 1.0;
            }
            for (int j = 0; j < e; j++) {
                meanProb[j] += probs[n * e + j];
            }
        }
        double value = 0;
        double[] c = new double[e];
        for (int j = 0; j < e; j++) {
            tokens[j] /= rows;
            meanProb[j] /= rows;
            value += tokens[j] * meanProb[j];
            c[j] = 0.3 * e * tokens[j];
        }
        assertEquals(value * e, LoadBalancingLoss.of(logits, e, k).value(), 0.0);
        List<INDArray> grads = LoadBalancingLoss.of(logits, e, k).gradient(0.3);
        int row = 0;
        for (int l = 0; l < grads.size(); l++) {
            INDArray grad = grads.get(l);
            DataType type = logits.get(l).dataType();
            assertEquals(type, grad.dataType());
            assertArrayEquals(logits.get(l).shape(), grad.shape());
            double[] got = grad.length() == 0 ? new double[0] : grad.dup('c').data().asDouble();
            for (int t = 0; t < grad.size(0); t++, row++) {
                double pc = 0;
                for (int j = 0; j < e; j++) {
                    pc += probs[row * e + j] * c[j];
                }
                for (int j = 0; j < e; j++) {
                    double expected = probs[row * e + j] * (c[j] - pc) / rows;
                    assertEquals(type == DataType.FLOAT ? (float) expected : expected, got[t * e + j], 0.0,
                            type + " row " + row + ", expert " + j);
                }
            }
        }
    }

    @Test
    void badInputIsNamed() {
        INDArray ok = Nd4j.zeros(DataType.DOUBLE, 2, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoadBalancingLoss.of(List.of(ok, Nd4j.zeros(DataType.DOUBLE, 2, 3)), 4, 2));
        assertTrue(e.getMessage().contains("layer 1") && e.getMessage().contains("[2, 3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoadBalancingLoss.of(List.of(ok), 4, 5));
        assertTrue(e.getMessage().contains("got 5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoadBalancingLoss.of(List.of(), 4, 2));
        assertTrue(e.getMessage().contains("at least one layer"), e.getMessage());
    }
}
