package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.Nd4jGroupedGemm;

/**
 * {@link ExpertRows}: float64 central differences for the input and both factors of every projection, and
 * the grouped path (float32 and float64) against a per-expert loop in float64 — slice each expert's rows, run
 * the textbook SwiGLU-with-LoRA forward and its hand-derived backward with dense products — for plans with
 * empty experts, a single row, all rows on one expert, and every expert holding every token (k = E).
 */
class ExpertRowsTest {
    private static final int E = 4;
    private static final int D = 5;
    private static final int I = 4;
    private static final int R = 2;
    private static final double ALPHA = 3.0; // scale 1.5, so a missing scale shows

    /** Weights of one FFN, every LoRA factor random (B non-zero). */
    private record Setup(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down) {
        static Setup random(long seed, DataType dt) {
            Random rnd = new Random(seed);
            ExpertWeights base = new ExpertWeights(gaussian(rnd, dt, 0.5, E, I, D), gaussian(rnd, dt, 0.5, E, I, D),
                    gaussian(rnd, dt, 0.5, E, D, I));
            return new Setup(base, lora(rnd, dt, D, I), lora(rnd, dt, D, I), lora(rnd, dt, I, D));
        }

        private static LoraExperts lora(Random rnd, DataType dt, int in, int out) {
            return new LoraExperts(gaussian(rnd, dt, 0.5, E, R, in), gaussian(rnd, dt, 0.5, E, out, R), ALPHA);
        }

        Setup castTo(DataType dt) {
            return new Setup(new ExpertWeights(base.w1().toArray(dt), base.w3().toArray(dt), base.w2().toArray(dt)),
                    cast(gate, dt), cast(up, dt), cast(down, dt));
        }

        private static LoraExperts cast(LoraExperts l, DataType dt) {
            return l == null ? null : new LoraExperts(l.a().castTo(dt), l.b().castTo(dt), l.alpha());
        }

        ExpertRows ffn() {
            return new ExpertRows(base, gate, up, down, new Nd4jGroupedGemm());
        }
    }

    @Test
    void gradientsMatchFiniteDifferences() {
        int[] offsets = {0, 2, 2, 5, 6};                         // expert 1 has no rows, expert 3 one
        Setup s = Setup.random(1, DataType.DOUBLE);
        Random rnd = new Random(2);
        INDArray xs = gaussian(rnd, DataType.DOUBLE, 1.0, 6, D);  // [N, D]
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, 6, D);   // dL/dys
        ExpertRows ffn = s.ffn();
        ExpertRows.Gradients g = ffn.backward(ffn.forward(xs, offsets), w);
        java.util.function.DoubleSupplier loss = () -> GradientCheck.dot(ffn.forward(xs, offsets).ys(), w);

        GradientCheck.check("ffn xs", xs, g.dxs(), loss);
        GradientCheck.check("ffn gate A", s.gate().a(), g.gate().dA(), loss);
        GradientCheck.check("ffn gate B", s.gate().b(), g.gate().dB(), loss);
        GradientCheck.check("ffn up A", s.up().a(), g.up().dA(), loss);
        GradientCheck.check("ffn up B", s.up().b(), g.up().dB(), loss);
        GradientCheck.check("ffn down A", s.down().a(), g.down().dA(), loss);
        GradientCheck.check("ffn down B", s.down().b(), g.down().dB(), loss);
        assertExpertGradientZero(g.gate().dA(), 1, "gate dA of the expert without rows");
        assertExpertGradientZero(g.down().dB(), 1, "down dB of the expert without rows");
    }

    @Test
    void onlyDownAdaptedLeavesOtherGradientsNull() {
        int[] offsets = {0, 1, 3, 3, 5};
        Setup full = Setup.random(3, DataType.DOUBLE);
        Setup s = new Setup(full.base(), null, null, full.down());
        Random rnd = new Random(4);
        INDArray xs = gaussian(rnd, DataType.DOUBLE, 1.0, 5, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, 5, D);
        ExpertRows ffn = s.ffn();
        ExpertRows.Gradients g = ffn.backward(ffn.forward(xs, offsets), w);
        assertNull(g.gate());
        assertNull(g.up());
        assertNotNull(g.down());
        java.util.function.DoubleSupplier loss = () -> GradientCheck.dot(ffn.forward(xs, offsets).ys(), w);
        GradientCheck.check("ffn (down only) xs", xs, g.dxs(), loss);
        GradientCheck.check("ffn (down only) down A", s.down().a(), g.down().dA(), loss);
        GradientCheck.check("ffn (down only) down B", s.down().b(), g.down().dB(), loss);
    }

    @Test
    void groupedMatchesPerExpertLoopWithEmptyExperts() {
        checkAgainstLoop(10, new int[] {0, 0, 4, 4, 7});
    }

    @Test
    void groupedMatchesPerExpertLoopWithSingleRow() {
        checkAgainstLoop(11, new int[] {0, 0, 1, 1, 1});
    }

    @Test
    void groupedMatchesPerExpertLoopWithAllRowsOnOneExpert() {
        checkAgainstLoop(12, new int[] {0, 0, 0, 9, 9});
    }

    @Test
    void groupedMatchesPerExpertLoopWhenEveryExpertHoldsEveryToken() {
        checkAgainstLoop(13, new int[] {0, 6, 12, 18, 24}); // k = E with T = 6
    }

    @Test
    void loraThatDoesNotFitTheBaseNamesBoth() {
        Setup s = Setup.random(5, DataType.DOUBLE);
        LoraExperts wrongIn = new LoraExperts(s.gate().a().get(NDArrayIndex.all(), NDArrayIndex.all(),
                NDArrayIndex.interval(0, D - 1)).dup(), s.gate().b(), ALPHA);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new ExpertRows(s.base(), wrongIn, null, null, new Nd4jGroupedGemm()));
        assertTrue(e.getMessage().contains("w1 (gate_proj)") && e.getMessage().contains("[4, 4, 5]")
                && e.getMessage().contains("[4, 2, 4]"), e.getMessage());
    }

    @Test
    void rowsThatDisagreeWithOffsetsAreNamed() {
        ExpertRows ffn = Setup.random(6, DataType.DOUBLE).ffn();
        INDArray xs = gaussian(new Random(7), DataType.DOUBLE, 1.0, 5, D);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ffn.forward(xs, new int[] {0, 1, 2, 3, 6}));
        assertTrue(e.getMessage().contains("xs must be [6, 5]") && e.getMessage().contains("[5, 5]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> ffn.forward(xs, new int[] {0, 2, 5}));
        assertTrue(e.getMessage().contains("E+1 = 5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> ffn.forward(xs.castTo(DataType.FLOAT),
                new int[] {0, 1, 2, 3, 5}));
        assertTrue(e.getMessage().contains("DOUBLE") && e.getMessage().contains("FLOAT"), e.getMessage());
    }

    private static void assertExpertGradientZero(INDArray grad, int expert, String what) {
        assertTrue(grad.slice(expert).amaxNumber().doubleValue() == 0.0, what + " should be exactly zero");
    }

    /** float32 grouped ≤ 1e-5 and float64 grouped ≤ 1e-12 of the float64 loop, relative to the largest entry. */
    private static void checkAgainstLoop(long seed, int[] offsets) {
        int n = offsets[E];
        Setup s64 = Setup.random(seed, DataType.DOUBLE);
        Random rnd = new Random(seed + 100);
        INDArray xs = gaussian(rnd, DataType.DOUBLE, 1.0, n, D);
        INDArray dys = gaussian(rnd, DataType.DOUBLE, 1.0, n, D);
        INDArray[] expected = PerExpertLoop.run(s64.base(), s64.gate(), s64.up(), s64.down(), xs, dys, offsets);

        for (DataType dt : new DataType[] {DataType.DOUBLE, DataType.FLOAT}) {
            ExpertRows ffn = s64.castTo(dt).ffn();
            ExpertRows.Context ctx = ffn.forward(xs.castTo(dt), offsets);
            ExpertRows.Gradients g = ffn.backward(ctx, dys.castTo(dt));
            INDArray[] actual = {ctx.ys(), g.dxs(), g.gate().dA(), g.gate().dB(), g.up().dA(), g.up().dB(),
                    g.down().dA(), g.down().dB()};
            String[] names = {"ys", "dxs", "gate dA", "gate dB", "up dA", "up dB", "down dA", "down dB"};
            double tolerance = dt == DataType.DOUBLE ? 1e-12 : 1e-5;
            for (int i = 0; i < names.length; i++) {
                assertClose(expected[i], actual[i], tolerance, dt + " " + names[i] + " offsets " + Arrays.toString(offsets));
            }
        }
    }

    static void assertClose(INDArray expected, INDArray actual, double tolerance, String what) {
        assertTrue(Arrays.equals(expected.shape(), actual.shape()), what + ": shape " + Arrays.toString(actual.shape())
                + ", expected " + Arrays.toString(expected.shape()));
        double maxRef = expected.amaxNumber().doubleValue();
        double maxDiff = expected.sub(actual.castTo(DataType.DOUBLE)).amaxNumber().doubleValue();
        double rel = maxDiff / Math.max(maxRef, 1e-300);
        assertTrue(rel <= tolerance, what + ": relative error " + rel + " > " + tolerance);
    }
}
