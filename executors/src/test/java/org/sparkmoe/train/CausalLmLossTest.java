package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.kernels.Dense;

/**
 * {@link CausalLmLoss}: hand-computed values, float64 central differences of dlogits and of dHidden through the LM
 * head, the last row unscored, row blocks.
 */
class CausalLmLossTest {

    /** Uniform logits: every scored position costs ln V; 2 windows of 3 → 4 scored positions. */
    @Test
    void uniformLogitsCostLogVocabularyPerPosition() {
        CausalLmLoss.Result r = CausalLmLoss.compute(Nd4j.zeros(DataType.DOUBLE, 6, 5), new int[][] {{0, 1, 2}, {3, 4, 0}});
        assertEquals(Math.log(5), r.value(), 1e-15);
        assertEquals(4, r.scored());
    }

    /**
     * One window [7, 1]: position 0 predicts token 1 from logits (0, ln 3) over V = 2, so p(1) = 3/4 and the loss
     * is −ln(3/4); dlogits row 0 = (1/4, 3/4 − 1), row 1 (the last, unscored) = 0.
     */
    @Test
    void handComputedValueAndGradient() {
        INDArray logits = Nd4j.create(new double[] {0, Math.log(3), 9, -9}, new long[] {2, 2}, 'c');
        CausalLmLoss.Result r = CausalLmLoss.compute(logits, new int[][] {{7, 1}});
        assertEquals(-Math.log(0.75), r.value(), 1e-15);
        assertEquals(0.25, r.dLogits().getDouble(0, 0), 1e-15);
        assertEquals(-0.25, r.dLogits().getDouble(0, 1), 1e-15);
        assertEquals(0.0, r.dLogits().getDouble(1, 0));
        assertEquals(0.0, r.dLogits().getDouble(1, 1));
    }

    @Test
    void gradientMatchesFiniteDifferences() {
        int[][] windows = {{1, 4, 2, 0}, {3, 3, 1, 2}};
        INDArray logits = GradientCheck.gaussian(new Random(3), DataType.DOUBLE, 2.0, 8, 5);
        INDArray d = CausalLmLoss.compute(logits, windows).dLogits();
        GradientCheck.check("causal lm loss: logits", logits, d, () -> CausalLmLoss.compute(logits, windows).value());
    }

    @Test
    void rowBlocksGiveTheSameBitsAsOneBlock() {
        int[][] windows = {{3, 1, 4, 1, 5}, {9, 2, 6, 5, 3}, {5, 8, 9, 7, 9}};
        INDArray logits = Nd4j.rand(DataType.FLOAT, 15, 11).muli(6).subi(3);
        CausalLmLoss.Result whole = CausalLmLoss.compute(logits, windows, Long.MAX_VALUE);
        for (long block : new long[] {1, 11, 22, 40, 11 * 7}) {   // 1, 1, 2, 3 and 7 rows: blocks cross windows
            CausalLmLoss.Result r = CausalLmLoss.compute(logits, windows, block);
            assertEquals(Double.doubleToLongBits(whole.value()), Double.doubleToLongBits(r.value()), "block " + block);
            assertArrayEquals(whole.dLogits().data().asFloat(), r.dLogits().data().asFloat(), "block " + block);
        }
    }

    /**
     * Through the LM head a block of rows at a time. In one block, the loss and dHidden = dlogits·W are the bits of
     * the whole logits' loss and gradient taken through the head. In blocks of 1, 2, 4 and 7 rows (crossing windows)
     * they agree to float32 rounding: OpenBLAS's product for a row can depend on the rows beside it in the call.
     * Without the gradient: the same loss and no dHidden.
     */
    @Test
    void throughTheHeadInRowBlocksGivesTheWholeLogitsLoss() {
        int[][] windows = {{3, 1, 4, 1, 5}, {9, 2, 6, 5, 3}, {5, 8, 9, 7, 9}};
        Nd4j.getRandom().setSeed(4);
        INDArray hidden = Nd4j.rand(DataType.FLOAT, 15, 16).subi(0.5);                        // [B·S, D]
        INDArray lmHead = Nd4j.rand(DataType.FLOAT, 11, 16).subi(0.5).muli(4);                // [V, D]
        CausalLmLoss.Result whole = CausalLmLoss.compute(Dense.linear(hidden, lmHead), windows);
        INDArray dHidden = Dense.linearBackward(whole.dLogits(), lmHead);
        CausalLmLoss.HeadResult one = CausalLmLoss.throughHead(hidden, lmHead, windows, true, Long.MAX_VALUE, 1);
        assertEquals(Double.doubleToLongBits(whole.value()), Double.doubleToLongBits(one.value()));
        assertArrayEquals(dHidden.data().asFloat(), one.dHidden().data().asFloat());
        for (long block : new long[] {11, 22, 44, 77}) {
            CausalLmLoss.HeadResult r = CausalLmLoss.throughHead(hidden, lmHead, windows, true, block, 1);
            assertEquals(whole.value(), r.value(), 1e-6 * whole.value(), "block " + block);
            double worst = r.dHidden().sub(dHidden).amaxNumber().doubleValue() / dHidden.amaxNumber().doubleValue();
            assertTrue(worst < 1e-6, "block " + block + ": " + worst);
        }
        CausalLmLoss.HeadResult lossOnly = CausalLmLoss.throughHead(hidden, lmHead, windows, false, 22, 1);
        assertEquals(CausalLmLoss.throughHead(hidden, lmHead, windows, true, 22, 1).value(), lossOnly.value(), 0.0);
        assertNull(lossOnly.dHidden());
        // what training takes: at least 512 rows at once, at most 2^24 logits unless that is fewer rows
        assertEquals(15, CausalLmLoss.headRows(15, 11));
        assertEquals(512, CausalLmLoss.headRows(2048, 151_936));
        assertEquals(524, CausalLmLoss.headRows(2048, 32_000));
    }

    @Test
    void throughTheHeadGradientMatchesFiniteDifferences() {
        int[][] windows = {{1, 4, 2, 0}, {3, 3, 1, 2}};
        INDArray hidden = GradientCheck.gaussian(new Random(5), DataType.DOUBLE, 1.0, 8, 6);
        INDArray lmHead = GradientCheck.gaussian(new Random(6), DataType.DOUBLE, 1.0, 5, 6);
        INDArray d = CausalLmLoss.throughHead(hidden, lmHead, windows, true, 10, 1).dHidden();     // blocks of 2 rows
        GradientCheck.check("causal lm loss through the head: hidden", hidden, d,
                () -> CausalLmLoss.throughHead(hidden, lmHead, windows, false, 10, 1).value());
    }

    @Test
    void windowsOfOneTokenAreRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CausalLmLoss.compute(Nd4j.zeros(DataType.FLOAT, 2, 4), new int[][] {{1}, {2}}));
        assertTrue(e.getMessage().contains("at least 2 tokens"), e.getMessage());
    }
}
