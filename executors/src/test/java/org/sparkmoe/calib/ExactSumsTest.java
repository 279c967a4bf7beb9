package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ExactSumsTest {
    /** Terms over 30 orders of magnitude, both signs: plain double summation depends on order here. */
    private static List<Double> terms(long seed) {
        Random random = new Random(seed);
        List<Double> terms = new ArrayList<>();
        for (int i = 0; i < 2000; i++) {
            double magnitude = Math.pow(10, random.nextInt(30) - 15);
            terms.add((random.nextBoolean() ? 1 : -1) * magnitude * random.nextDouble());
        }
        terms.add(1e15);
        terms.add(-1e15);
        return terms;
    }

    @Test
    void anyOrderAndAnySplitGivesTheSameBitsAndTheExactSum() {
        List<Double> terms = terms(7);
        ExactSums forward = new ExactSums(1);
        terms.forEach(t -> forward.add(0, t));

        List<Double> shuffled = new ArrayList<>(terms);
        Collections.shuffle(shuffled, new Random(11));
        ExactSums left = new ExactSums(1);
        ExactSums right = new ExactSums(1);
        for (int i = 0; i < shuffled.size(); i++) {
            (i % 3 == 0 ? left : right).add(0, shuffled.get(i));
        }
        ExactSums merged = new ExactSums(1);
        merged.merge(right);
        merged.merge(left);
        assertTrue(forward.sameAs(merged));

        BigDecimal exact = BigDecimal.ZERO;
        for (double t : terms) {
            // what the accumulator keeps of each term: its bits down to 2^-64, truncated toward zero
            exact = exact.add(new BigDecimal(t).setScale(64, java.math.RoundingMode.DOWN)
                    .multiply(BigDecimal.valueOf(2).pow(64)).setScale(0, java.math.RoundingMode.DOWN)
                    .divide(BigDecimal.valueOf(2).pow(64)));
        }
        assertEquals(exact.doubleValue(), forward.get(0), Math.ulp(exact.doubleValue()));

        double naiveForward = terms.stream().mapToDouble(Double::doubleValue).sum();
        double naiveShuffled = 0;
        for (double t : shuffled) {
            naiveShuffled += t;
        }
        assertFalse(naiveForward == naiveShuffled && naiveForward == exact.doubleValue(),
                "the data should defeat plain summation, or the test proves nothing");
    }

    @Test
    void negativeTermsCancelExactly() {
        ExactSums sums = new ExactSums(2);
        double[] values = {0.1, 1e-19, 3.75e12, 5e-300, Float.MIN_NORMAL, 123.456};
        for (double v : values) {
            sums.add(0, v);
            sums.add(1, -v);
        }
        for (int i = values.length - 1; i >= 0; i--) {
            sums.add(0, -values[i]);
            sums.add(1, values[i]);
        }
        assertEquals(0.0, sums.get(0));
        assertEquals(0.0, sums.get(1));
        assertTrue(sums.sameAs(new ExactSums(2)));
    }

    @Test
    void float32ValuesAreKeptExactly() {
        ExactSums sums = new ExactSums(1);
        sums.add(0, 1.0f / 3);
        sums.add(0, -2.5f);
        assertEquals((double) (1.0f / 3) - 2.5, sums.get(0), 0.0);
    }

    @Test
    void rejectsNonFiniteAndHugeTerms() {
        ExactSums sums = new ExactSums(1);
        assertThrows(IllegalArgumentException.class, () -> sums.add(0, Double.NaN));
        assertThrows(IllegalArgumentException.class, () -> sums.add(0, Double.POSITIVE_INFINITY));
        assertThrows(IllegalArgumentException.class, () -> sums.add(0, 0x1p62));
        assertThrows(IllegalArgumentException.class, () -> sums.merge(new ExactSums(2)));
    }
}
