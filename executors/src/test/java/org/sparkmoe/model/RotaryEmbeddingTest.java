package org.sparkmoe.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

class RotaryEmbeddingTest {

    private static float[] gaussian(Random rnd, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) rnd.nextGaussian();
        }
        return a;
    }

    @Test
    void positionZeroIsIdentity() {
        RotaryEmbedding rope = new RotaryEmbedding(32, 10000.0, 8);
        float[] q = gaussian(new Random(1), 32);
        float[] out = new float[32];
        rope.rotate(q, 0, out, 0, 0);
        assertArrayEquals(q, out, 0f);
    }

    @Test
    void rotationPreservesNorm() {
        int hd = 64;
        RotaryEmbedding rope = new RotaryEmbedding(hd, 1000000.0, 512);
        Random rnd = new Random(2);
        for (int pos : new int[] {1, 2, 7, 100, 511}) {
            float[] q = gaussian(rnd, hd);
            float[] out = new float[hd];
            rope.rotate(q, 0, out, 0, pos);
            double before = 0;
            double after = 0;
            for (int i = 0; i < hd; i++) {
                before += (double) q[i] * q[i];
                after += (double) out[i] * out[i];
            }
            assertEquals(Math.sqrt(before), Math.sqrt(after), 1e-5 * Math.sqrt(before), "norm at position " + pos);
        }
    }

    /**
     * hd = 4, θ = 10000, pos = 1: inv_freq = [1/10000^(0/4), 1/10000^(2/4)] = [1, 0.01], so the pair
     * (x0, x2) turns by 1 rad and (x1, x3) by 0.01 rad (rotate_half pairs i with i + hd/2):
     * out0 = x0·cos1 − x2·sin1, out2 = x2·cos1 + x0·sin1, out1 = x1·cos0.01 − x3·sin0.01, out3 = x3·cos0.01 + x1·sin0.01.
     * With x = [1, 2, 3, 4]: cos1 = 0.5403023, sin1 = 0.8414710, cos0.01 = 0.99995000, sin0.01 = 0.00999983.
     */
    @Test
    void handComputedPositionOne() {
        RotaryEmbedding rope = new RotaryEmbedding(4, 10000.0, 2);
        float[] x = {1f, 2f, 3f, 4f};
        float[] out = new float[4];
        rope.rotate(x, 0, out, 0, 1);
        float[] expected = {
                (float) (1 * 0.5403023 - 3 * 0.8414710),     // -1.9841107
                (float) (2 * 0.99995000 - 4 * 0.00999983),   //  1.9599007
                (float) (3 * 0.5403023 + 1 * 0.8414710),     //  2.4623779
                (float) (4 * 0.99995000 + 2 * 0.00999983),   //  4.0197997
        };
        assertArrayEquals(expected, out, 1e-6f);
        assertEquals(-1.9841107f, out[0], 1e-6f);
    }

    @Test
    void rotatesAtOffsetsWithoutTouchingNeighbours() {
        int hd = 8;
        RotaryEmbedding rope = new RotaryEmbedding(hd, 10000.0, 4);
        float[] x = gaussian(new Random(3), 3 * hd);
        float[] expected = new float[hd];
        rope.rotate(x, hd, expected, 0, 3);
        float[] dst = new float[3 * hd];
        java.util.Arrays.fill(dst, 42f);
        rope.rotate(x, hd, dst, 2 * hd, 3);
        for (int i = 0; i < 2 * hd; i++) {
            assertEquals(42f, dst[i], "dst[" + i + "] outside the target head was written");
        }
        assertArrayEquals(expected, java.util.Arrays.copyOfRange(dst, 2 * hd, 3 * hd), 0f);
    }

    @Test
    void positionsComposeAsRotations() {
        // rotating by pos 2 equals rotating by pos 1 twice (angles add), up to float rounding
        int hd = 16;
        RotaryEmbedding rope = new RotaryEmbedding(hd, 10000.0, 3);
        float[] x = gaussian(new Random(4), hd);
        float[] once = new float[hd];
        float[] twice = new float[hd];
        float[] direct = new float[hd];
        rope.rotate(x, 0, once, 0, 1);
        rope.rotate(once, 0, twice, 0, 1);
        rope.rotate(x, 0, direct, 0, 2);
        assertArrayEquals(direct, twice, 1e-5f);
        assertEquals(3, rope.positions());
    }

    @Test
    void partialRotaryRotatesTheLeadingPartAsAHeadOfThatSize() {
        // GLM-4.5: rd = hd/2 rotated with inv_freq over rd (θ^(2i/rd)), the trailing hd − rd copied
        int hd = 8;
        RotaryEmbedding partial = new RotaryEmbedding(hd, 4, 10000.0, 4);
        RotaryEmbedding small = new RotaryEmbedding(4, 10000.0, 4);
        float[] x = gaussian(new Random(5), hd);
        float[] out = new float[hd];
        float[] lead = new float[4];
        partial.rotate(x, 0, out, 0, 3);
        small.rotate(x, 0, lead, 0, 3);
        assertArrayEquals(lead, java.util.Arrays.copyOfRange(out, 0, 4), 0f);
        assertArrayEquals(java.util.Arrays.copyOfRange(x, 4, 8), java.util.Arrays.copyOfRange(out, 4, 8), 0f);
        double[] back = new double[hd];
        double[] outD = new double[hd];
        for (int i = 0; i < hd; i++) {
            outD[i] = out[i];
        }
        partial.rotateBack(outD, 0, back, 0, 3);
        for (int i = 0; i < hd; i++) {
            assertEquals(x[i], back[i], 1e-6, "rotating back restores entry " + i);
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new RotaryEmbedding(8, 3, 10000.0, 4));
        assertTrue(e.getMessage().contains("rotary dimension must be even and in [2, head_dim 8], got 3"),
                e.getMessage());
    }

    /** Interleaved pairs (x[2i], x[2i+1]) are the rotate_half pairs (x[i], x[i + hd/2]) of the de-interleaved head. */
    @Test
    void interleavedIsRotateHalfOfTheDeinterleavedHead() {
        int hd = 8;
        RotaryEmbedding half = new RotaryEmbedding(hd, 10000.0, 6);
        RotaryEmbedding interleaved = new RotaryEmbedding(hd, 10000.0, 6, null, true);
        float[] x = gaussian(new Random(5), hd);
        float[] split = new float[hd];
        for (int i = 0; i < hd / 2; i++) {
            split[i] = x[2 * i];
            split[hd / 2 + i] = x[2 * i + 1];
        }
        float[] expected = new float[hd];
        float[] out = new float[hd];
        half.rotate(split, 0, expected, 0, 5);
        interleaved.rotate(x, 0, out, 0, 5);
        for (int i = 0; i < hd / 2; i++) {
            assertEquals(expected[i], out[2 * i], 0f, "pair " + i + " first");
            assertEquals(expected[hd / 2 + i], out[2 * i + 1], 0f, "pair " + i + " second");
        }
    }
}
