package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.model.LinearInputs.Site;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Importance sums are Σ x² per column and row counts, exact whatever the split of the rows and the merge order. */
class ImportanceSumsTest {
    private static final int D = 5;
    private static final int I = 3;
    private static final int E = 4;

    private static float[] rows(SplittableRandom r, int n, int width) {
        float[] v = new float[n * width];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(-6, 6)));
        }
        return v;
    }

    /** Three batches: site rows for layer 0 and expert rows for layer 1. */
    private static ImportanceSums batch(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ImportanceSums s = new ImportanceSums(2);
        s.add(0, Site.ATTN_IN, Nd4j.create(rows(r, 7, D), new long[] {7, D}, 'c'));
        for (int e = 0; e < E; e += 2) {
            s.addExpert(1, E, e, rows(r, 3, D), D, rows(r, 3, I), I);
        }
        return s;
    }

    @Test
    void mergeIsExactInAnyOrder() {
        ImportanceSums abc = new ImportanceSums(2).merge(batch(1)).merge(batch(2)).merge(batch(3));
        ImportanceSums cba = new ImportanceSums(2).merge(batch(3).merge(batch(2))).merge(batch(1));
        assertTrue(abc.sameAs(cba));
        assertFalse(abc.sameAs(batch(1)));
        assertArrayEquals(new long[] {21}, abc.site(0, Site.ATTN_IN).counts());
        assertArrayEquals(new long[] {9, 0, 9, 0}, abc.expertInputs(1).counts(), "per-expert counts");
        assertNull(abc.site(1, Site.ATTN_IN), "nothing shown there");
        assertNull(abc.expertInputs(0));
    }

    @Test
    void sumsAreTheSquaresOfTheRowsPerColumnAndMatrix() {
        SquareSums s = new SquareSums(2, 3);
        s.add(1, new float[] {1, -2, 0.5f, 3, 0, -1}, "test");
        s.add(0, new float[] {0.25f, 1, 1}, "test");
        assertArrayEquals(new double[] {0.0625, 1, 1, 10, 4, 1.25}, s.sums());
        assertArrayEquals(new long[] {1, 2}, s.counts());
    }

    @Test
    void aNonFiniteInputIsRefusedNamingWhereItWas() {
        ImportanceSums s = new ImportanceSums(3);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> s.add(2, Site.ATTN_OUT, Nd4j.create(new float[] {1, Float.NaN}, new long[] {1, 2}, 'c')));
        assertEquals("ATTN_OUT of decoder layer 2 holds NaN; expected finite inputs below 2^31 (does the model hold "
                + "NaN or infinite weights?)", e.getMessage());
    }
}
