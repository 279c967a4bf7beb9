package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Widening of every readable dtype, from bit patterns written by hand. The patterns come from
 * NumPy: {@code np.array([1.0, -2.5, 65504, 2**-24, 1023*2**-24, np.inf, -0.0, 2**-14],
 * np.float16).view(np.uint16)} and, for bfloat16, the top 16 bits of
 * {@code struct.pack('<f', x)}.
 */
class SafeTensorsDecodingTest {

    @TempDir
    Path tmp;

    private float[] readFloats(String dtype, String shape, byte[] data) throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve(dtype + ".safetensors"),
                "{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[0," + data.length + "]}}",
                data);
        try (SafeTensorsFile f = SafeTensorsFile.open(file)) {
            INDArray t = f.readFloat("t");
            return t.reshape(t.length()).toFloatVector();
        }
    }

    @Test
    void f16KnownValues() throws IOException {
        float[] got = readFloats("F16", "[8]",
                RawSafeTensors.shorts(0x3c00, 0xc100, 0x7bff, 0x0001, 0x03ff, 0x7c00, 0x8000, 0x0400));
        float[] expected = {1.0f, -2.5f, 65504f, 0x1p-24f, 1023 * 0x1p-24f, Float.POSITIVE_INFINITY, -0.0f, 0x1p-14f};
        assertArrayEquals(expected, got);
        assertEquals(Float.floatToIntBits(-0.0f), Float.floatToIntBits(got[6]), "sign of -0 kept");
    }

    @Test
    void f16NegativeInfinityAndNaN() {
        assertEquals(Float.NEGATIVE_INFINITY, HalfFloats.f16ToFloat((short) 0xfc00));
        assertEquals(Float.NaN, HalfFloats.f16ToFloat((short) 0x7e00));
        assertEquals(-0x1p-24f, HalfFloats.f16ToFloat((short) 0x8001));
    }

    @Test
    void bf16KnownValues() throws IOException {
        // 1.0 = 0x3f80, -2.5 = 0xc020, 3.140625 = 0x4049, +inf = 0x7f80, 0x80a3 = -1.4969e-38 (top half of -1.5e-38)
        float[] got = readFloats("BF16", "[5]", RawSafeTensors.shorts(0x3f80, 0xc020, 0x4049, 0x7f80, 0x80a3));
        float[] expected = {1.0f, -2.5f, 3.140625f, Float.POSITIVE_INFINITY, Float.intBitsToFloat(0x80a30000)};
        assertArrayEquals(expected, got);
    }

    @Test
    void f64IsNarrowedAndShapeKept() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("f64.safetensors"),
                "{\"t\":{\"dtype\":\"F64\",\"shape\":[2,2],\"data_offsets\":[0,32]}}",
                RawSafeTensors.doubles(0.1, -3.0, 1e300, 2.5));
        try (SafeTensorsFile f = SafeTensorsFile.open(file)) {
            INDArray t = f.readFloat("t");
            assertArrayEquals(new long[] {2, 2}, t.shape());
            assertArrayEquals(new float[] {0.1f, -3.0f, Float.POSITIVE_INFINITY, 2.5f}, t.reshape(4).toFloatVector());
        }
    }

    @Test
    void i32IdsAreWidened() throws IOException {
        Path file = RawSafeTensors.write(tmp.resolve("i32.safetensors"),
                "{\"ids\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                RawSafeTensors.ints(0, -1, Integer.MAX_VALUE, 7));
        try (SafeTensorsFile f = SafeTensorsFile.open(file)) {
            assertArrayEquals(new long[] {0, -1, Integer.MAX_VALUE, 7}, f.readLongs("ids"));
        }
    }

    @Test
    void unalignedTensorAfterAnOddSizedOne() throws IOException {
        // BF16 [3] takes 6 bytes, so the F32 tensor starts at data byte 6, not a multiple of 4.
        byte[] bf16 = RawSafeTensors.shorts(0x3f80, 0x3f80, 0x3f80);
        byte[] f32 = RawSafeTensors.floats(1.5f, -2f);
        byte[] data = new byte[bf16.length + f32.length];
        System.arraycopy(bf16, 0, data, 0, bf16.length);
        System.arraycopy(f32, 0, data, bf16.length, f32.length);
        Path file = RawSafeTensors.write(tmp.resolve("odd.safetensors"),
                "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                        + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[6,14]}}", data);
        try (SafeTensorsFile f = SafeTensorsFile.open(file)) {
            assertArrayEquals(new float[] {1.5f, -2f}, f.readFloat("b").toFloatVector());
        }
    }
}
