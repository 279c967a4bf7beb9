package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import org.junit.jupiter.api.Test;

/**
 * {@link Mxfp4} decodes as transformers' {@code convert_moe_packed_tensors}: low nibble first, e2m1 values
 * (FP4_VALUES), times 2^(scale − 127) per block of 32; rows every {@code rowStep} stored rows; tiles equal the
 * whole decoding; a matrix that does not fit its bytes is refused.
 */
class Mxfp4Test {

    @Test
    void decodesNibblesAndScalesAsTransformers() {
        byte[] blocks = new byte[2 * 16];          // 2 stored rows of 32 values
        byte[] scales = {(byte) 128, (byte) 125};  // ×2, ×1/4
        blocks[0] = (byte) 0x71;                   // element 0: code 1 (0.5), element 1: code 7 (6.0)
        blocks[1] = (byte) 0xF8;                   // element 2: code 8 (−0), element 3: code 15 (−6)
        blocks[16] = (byte) 0x2A;                  // row 1, element 0: code 10 (−1), element 1: code 2 (1.0)
        Mxfp4 m = new Mxfp4(ByteBuffer.wrap(blocks), ByteBuffer.wrap(scales), 0, 0, 1, 2, 32);
        float[] v = m.decode();
        assertArrayEquals(new float[] {1.0f, 12.0f, -0.0f, -12.0f}, java.util.Arrays.copyOf(v, 4));
        assertTrue(Float.floatToRawIntBits(v[2]) == Float.floatToRawIntBits(-0.0f), "code 8 is −0");
        assertArrayEquals(new float[] {-0.25f, 0.25f, 0f}, java.util.Arrays.copyOfRange(v, 32, 35));
    }

    @Test
    void tilesAndRowStepsEqualTheWholeDecoding() {
        java.util.Random rnd = new java.util.Random(3);
        byte[] blocks = new byte[6 * 64 / 2];      // 6 stored rows of 64 values
        byte[] scales = new byte[6 * 2];
        rnd.nextBytes(blocks);
        for (int i = 0; i < scales.length; i++) {
            scales[i] = (byte) (120 + rnd.nextInt(10));
        }
        ByteBuffer b = ByteBuffer.wrap(blocks);
        ByteBuffer s = ByteBuffer.wrap(scales);
        Mxfp4 all = new Mxfp4(b, s, 0, 0, 1, 6, 64);
        Mxfp4 odd = new Mxfp4(b, s, 32, 2, 2, 3, 64);                      // stored rows 1, 3, 5
        float[] whole = all.decode();
        float[] oddRows = odd.decode();
        for (int r = 0; r < 3; r++) {
            assertArrayEquals(java.util.Arrays.copyOfRange(whole, (2 * r + 1) * 64, (2 * r + 2) * 64),
                    java.util.Arrays.copyOfRange(oddRows, r * 64, (r + 1) * 64), "odd row " + r);
        }
        float[] tile = new float[2 * 21];
        odd.decode(1, 3, 30, 51, tile, 0);                                 // rows 1..2, columns 30..50
        for (int r = 0; r < 2; r++) {
            assertArrayEquals(java.util.Arrays.copyOfRange(oddRows, (r + 1) * 64 + 30, (r + 1) * 64 + 51),
                    java.util.Arrays.copyOfRange(tile, r * 21, (r + 1) * 21), "tile row " + r);
        }
    }

    @Test
    void aMatrixOutsideItsBytesIsRefused() {
        ByteBuffer b = ByteBuffer.allocate(32);
        ByteBuffer s = ByteBuffer.allocate(2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Mxfp4(b, s, 0, 0, 2, 2, 32));
        assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new Mxfp4(b, s, 0, 0, 1, 1, 48));
        assertTrue(e.getMessage().contains("blocks of 32"), e.getMessage());
    }
}
