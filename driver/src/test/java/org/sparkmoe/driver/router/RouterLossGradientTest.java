package org.sparkmoe.driver.router;

import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.ops.transforms.Transforms;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * retrain-router's loss for a router with a bias (gpt-oss): the network {@link RouterTrainer#network} builds, in
 * float64, with soft teacher labels softmax(z) [N, E]. Its bias gradient (DL4J's minibatch sum divided by N, as its
 * updater divides it) against central differences of its score (the mean over the N tokens), element by element, and
 * against the closed form dL/db = mean over tokens of (softmax(x·W + b) − labels).
 * Step h = 1e-6 on a loss of order 1: round-off ε·|L|/h ≈ 1e-10, truncation h²·L'''/6 ≈ 1e-13; each element passes
 * within 1e-7 relative or 1e-9 absolute.
 */
class RouterLossGradientTest {
    private static final int N = 12;
    private static final int D = 5;
    private static final int E = 6;
    private static final double STEP = 1e-6;

    private static INDArray gaussian(Random rnd, double sd, long... shape) {
        INDArray a = Nd4j.create(DataType.DOUBLE, shape);
        for (long j = 0; j < a.length(); j++) {
            a.putScalar(j, rnd.nextGaussian() * sd);
        }
        return a;
    }

    @Test
    void biasGradientMatchesCentralDifferences() {
        MultiLayerNetwork net = new MultiLayerNetwork(RouterTrainer.network(D, E, false, true, 1e-3, 3,
                DataType.DOUBLE));
        net.init();
        Random rnd = new Random(11);
        INDArray w = gaussian(rnd, 0.5, D, E);                                              // DL4J's W [D, E]
        INDArray b = gaussian(rnd, 0.5, 1, E);                                              // [1, E]
        net.getLayer(0).setParam("W", w);
        net.getLayer(0).setParam("b", b);
        INDArray x = gaussian(rnd, 1.0, N, D);
        INDArray labels = Transforms.softmax(gaussian(rnd, 1.5, N, E), true);            // teacher distributions
        DataSet data = new DataSet(x, labels);

        net.setInput(x);
        net.setLabels(labels);
        net.computeGradientAndScore();
        Gradient g = net.gradient();
        // DL4J's gradient is the sum over the minibatch (its updater divides by N); the score is the mean
        INDArray analytic = g.getGradientFor("0_b").div(N);                                  // [1, E]
        INDArray closed = Transforms.softmax(x.mmul(w).addiRowVector(b), true).subi(labels).mean(0); // [E]
        for (int e = 0; e < E; e++) {
            double original = b.getDouble(0, e);
            INDArray param = net.getLayer(0).getParam("b");
            param.putScalar(0, e, original + STEP);
            double plus = net.score(data);
            param.putScalar(0, e, original - STEP);
            double minus = net.score(data);
            param.putScalar(0, e, original);
            double numeric = (plus - minus) / (2 * STEP);
            double a = analytic.getDouble(e);
            double err = Math.abs(a - numeric);
            assertTrue(err <= 1e-7 * Math.max(Math.abs(a), Math.abs(numeric)) || err <= 1e-9,
                    "dL/db[" + e + "]: analytic " + a + ", numeric " + numeric);
            assertTrue(Math.abs(a - closed.getDouble(e)) <= 1e-12, "dL/db[" + e + "]: " + a + " vs closed form "
                    + closed.getDouble(e));
        }
        assertTrue(analytic.amaxNumber().doubleValue() > 1e-3, "a gradient to check: " + analytic);
    }
}
