package org.sparkmoe.routing;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
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
        assertEquals(3.8 / 3, LoadBalancingLoss.value(handExample(DataType.DOUBLE), 3, 1), 1e-14);
    }

    @Test
    void topTwoMatchesHandComputedValueAndSumsTheKEBroadcast() {
        assertEquals(1.35 + 2.75 / 3, LoadBalancingLoss.value(handExample(DataType.DOUBLE), 3, 2), 1e-14);
        assertEquals(1.35 + 2.75 / 3, LoadBalancingLoss.value(handExample(DataType.FLOAT), 3, 2), 1e-6);
    }

    @Test
    void uniformRouterGivesK() {
        // p = 1/E everywhere: Σ_e f_e = K and router_prob = 1/E, so the loss is E·K/E = K
        INDArray flat = Nd4j.zeros(DataType.DOUBLE, 5, 4);
        assertEquals(2.0, LoadBalancingLoss.value(List.of(flat), 4, 2), 1e-14);
    }

    @Test
    void gradientMatchesFiniteDifferences() {
        Random rnd = new Random(21);
        List<INDArray> logits = List.of(GradientCheck.gaussian(rnd, DataType.DOUBLE, 1.5, 6, 4),
                GradientCheck.gaussian(rnd, DataType.DOUBLE, 1.5, 5, 4));
        double dLoss = 0.7;
        List<INDArray> grads = LoadBalancingLoss.gradient(logits, 4, 2, dLoss);
        for (int l = 0; l < logits.size(); l++) {
            GradientCheck.check("load balancing layer " + l, logits.get(l), grads.get(l),
                    () -> dLoss * LoadBalancingLoss.value(logits, 4, 2));
        }
    }

    @Test
    void badInputIsNamed() {
        INDArray ok = Nd4j.zeros(DataType.DOUBLE, 2, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoadBalancingLoss.value(List.of(ok, Nd4j.zeros(DataType.DOUBLE, 2, 3)), 4, 2));
        assertTrue(e.getMessage().contains("layer 1") && e.getMessage().contains("[2, 3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoadBalancingLoss.value(List.of(ok), 4, 5));
        assertTrue(e.getMessage().contains("got 5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoadBalancingLoss.value(List.of(), 4, 2));
        assertTrue(e.getMessage().contains("at least one layer"), e.getMessage());
    }
}
