package org.sparkmoe.model;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The per-row pieces of {@link KlDivergence} against closed forms (the model-level check is EvalBaselineTest's). */
class KlDivergenceTest {
    /** P = softmax(0, ln 2, −∞-ish) = (1/3, 2/3, ~0), Q uniform over 3: KL = 1/3·ln(1) + 2/3·ln(2) + ~0. */
    @Test
    void klOfAShiftedRowAgainstTheUniformOne() {
        float[] p = {9f, 0f, (float) Math.log(2), -200f};   // row at offset 1
        float[] q = {5f, 7f, 7f, 7f};
        double lseP = org.sparkmoe.kernels.Softmax.logSumExp(p, 1, 3, new double[3]);
        double lseQ = org.sparkmoe.kernels.Softmax.logSumExp(q, 1, 3, new double[3]);
        double expected = (1.0 / 3) * Math.log((1.0 / 3) / (1.0 / 3)) + (2.0 / 3) * Math.log((2.0 / 3) / (1.0 / 3));
        assertEquals(expected, KlDivergence.kl(p, q, 1, 3, lseP, lseQ), 1e-7);
        assertEquals(0.0, KlDivergence.kl(p, p, 1, 3, lseP, lseP), 0.0);
    }

    @Test
    void argmaxTakesTheFirstOfEqualMaxima() {
        float[] v = {100f, 1f, 3f, 3f, 2f};
        assertEquals(1, KlDivergence.argmax(v, 1, 4));
    }
}
