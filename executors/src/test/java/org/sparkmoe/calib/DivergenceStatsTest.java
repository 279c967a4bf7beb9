package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class DivergenceStatsTest {
    private static final double[] KLD = {0.5, 0.0, 2.0, 0.25, 1.0};
    private static final double[] NLL = {1.0, 2.0, 3.0, 4.0, 5.0};
    private static final double[] BASE = {1.5, 2.5, 0.5, 4.0, 1.0};
    private static final boolean[] SAME = {true, false, true, true, false};

    /** llama.cpp's percentile: sorted {0, .25, .5, 1, 2}, p = f·(n−1), linear between neighbours. */
    @Test
    void percentilesInterpolateLikeLlamaCpp() {
        DivergenceStats s = new DivergenceStats().add(KLD, NLL, BASE, SAME);
        assertEquals(0.0, s.kldPercentile(0));
        assertEquals(0.5, s.kldPercentile(0.5));
        assertEquals(2.0, s.kldPercentile(1));
        assertEquals(0.04 * 1.0 + 0.96 * 2.0, s.kldPercentile(0.99), 1e-15);   // p = 3.96
        assertEquals(0.25 + 0.5 * 0.25, s.kldPercentile(0.375), 1e-15);          // p = 1.5
        assertEquals(3.75, s.kldSum());
        assertEquals(15.0, s.nllSum());
        assertEquals(9.5, s.baselineNllSum());
        assertEquals(3, s.sameTop());
        assertEquals(5, s.tokens());
    }

    /** Any split into parts, merged in any order, gives the same bits: sums are exact, values are sorted. */
    @Test
    void mergeOrderAndSplitDoNotChangeABit() {
        Random random = new Random(3);
        int n = 3000;
        double[] kld = new double[n];
        double[] nll = new double[n];
        double[] base = new double[n];
        boolean[] same = new boolean[n];
        for (int i = 0; i < n; i++) {
            kld[i] = Math.pow(10, random.nextInt(12) - 8) * random.nextDouble();
            nll[i] = 10 * random.nextDouble();
            base[i] = 10 * random.nextDouble();
            same[i] = random.nextBoolean();
        }
        DivergenceStats whole = new DivergenceStats().add(kld, nll, base, same);
        DivergenceStats merged = new DivergenceStats();
        for (int end = n; end > 0; end -= 700) {   // parts from the back, of 700 tokens
            int start = Math.max(0, end - 700);
            merged.merge(new DivergenceStats().add(slice(kld, start, end), slice(nll, start, end),
                    slice(base, start, end), java.util.Arrays.copyOfRange(same, start, end)));
        }
        assertEquals(whole.tokens(), merged.tokens());
        assertEquals(whole.sameTop(), merged.sameTop());
        assertEquals(whole.kldSum(), merged.kldSum(), 0.0);
        assertEquals(whole.nllSum(), merged.nllSum(), 0.0);
        assertEquals(whole.baselineNllSum(), merged.baselineNllSum(), 0.0);
        for (double f : new double[]{0, 0.5, 0.9, 0.99, 0.999, 1}) {
            assertEquals(whole.kldPercentile(f), merged.kldPercentile(f), 0.0);
        }
        assertTrue(whole.kldPercentile(0.99) < whole.kldPercentile(1));
    }

    @Test
    void refusesMoreTokensThanOneArrayHoldsInsteadOfOverflowing() {
        DivergenceStats capped = new DivergenceStats(KLD.length + 2).add(KLD, NLL, BASE, SAME);
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> capped.merge(new DivergenceStats().add(KLD, NLL, BASE, SAME)));
        assertTrue(e.getMessage().startsWith("over " + (KLD.length + 2) + " scored tokens"), e.getMessage());
        assertEquals(KLD.length, capped.tokens(), "nothing added by the refused merge");
        assertEquals(new DivergenceStats().add(KLD, NLL, BASE, SAME).kldSum(), capped.kldSum(), "sums unchanged");
        assertEquals(3, capped.sameTop(), "same-top count unchanged");
    }

    @Test
    void rejectsArraysOfDifferentLengthsAndPercentilesOfNothing() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new DivergenceStats().add(KLD, NLL, new double[4], SAME));
        assertEquals("per-token arrays differ in length: kld 5, nll 5, baseline nll 4, same top 5", e.getMessage());
        assertThrows(IllegalStateException.class, () -> new DivergenceStats().kldPercentile(0.99));
    }

    private static double[] slice(double[] a, int from, int to) {
        return java.util.Arrays.copyOfRange(a, from, to);
    }
}
