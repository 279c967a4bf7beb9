package org.sparkmoe.io;

import java.nio.ByteBuffer;
import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.cpu.nativecpu.NDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A block-quantized FP8 weight as DeepSeek-V3 and Kimi-K2 store it: codes W [out, in] in F8_E4M3 and a float32
 * {@code weight_scale_inv} S [⌈out/bo⌉, ⌈in/bi⌉] for blocks of bo × bi ({@code quantization_config.weight_block_size},
 * 128 × 128 in the released checkpoints), the last block of each dimension partial. The value of element (r, c) is
 * {@code e4m3(W[r, c]) · S[r / bo, c / bi]} rounded to float32 — DeepSeek's {@code weight_dequant}, bit for bit.
 *
 * <p>The array itself holds the codes (UINT8, over the checkpoint's memory map); it is a weight operand only, read
 * through {@link #dequantize} into a caller's tile (the grouped GEMM widens it tile by tile like bf16, see
 * kernels/Widened) — never with ND4J's own element operations, which would see the codes as integers.
 */
public final class Fp8BlockMatrix extends NDArray {
    /** e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN. */
    private static final float[] E4M3 = new float[256];

    static {
        for (int b = 0; b < 256; b++) {
            int exponent = (b >> 3) & 0xF;
            int mantissa = b & 0x7;
            float magnitude = exponent == 0 ? mantissa / 8f * 0x1p-6f
                    : (1 + mantissa / 8f) * (float) Math.scalb(1.0, exponent - 7);
            if (exponent == 0xF && mantissa == 0x7) {
                magnitude = Float.NaN;
            }
            E4M3[b] = (b & 0x80) != 0 ? -magnitude : magnitude;
        }
    }

    private final float[] scales;  // [⌈out/bo⌉ · ⌈in/bi⌉] row-major
    private final int blockRows;   // bo
    private final int blockCols;   // bi
    private final int scaleCols;   // ⌈in/bi⌉

    /**
     * @param codes     UINT8 [out, in], 'c' order (the F8_E4M3 bytes, e.g. {@code SafeTensorsFile#stored})
     * @param scales    [⌈out/bo⌉, ⌈in/bi⌉] weight_scale_inv
     * @param blockRows bo
     * @param blockCols bi
     */
    public Fp8BlockMatrix(INDArray codes, INDArray scales, int blockRows, int blockCols) {
        super(codes.data(), codes.shape(), codes.stride(), codes.offset(), 'c', DataType.UINT8);
        if (codes.dataType() != DataType.UINT8 || codes.rank() != 2 || codes.ordering() != 'c'
                || codes.stride(1) != 1) {
            throw new IllegalArgumentException("FP8 codes must be a 'c'-order UINT8 matrix, got " + codes.dataType()
                    + " " + Arrays.toString(codes.shape()));
        }
        long[] expected = {ceilDiv(codes.size(0), blockRows), ceilDiv(codes.size(1), blockCols)};
        if (!Arrays.equals(scales.shape(), expected)) {
            throw new IllegalArgumentException("weight_scale_inv must be " + Arrays.toString(expected) + " for "
                    + Arrays.toString(codes.shape()) + " in blocks of " + blockRows + "×" + blockCols + ", got "
                    + Arrays.toString(scales.shape()));
        }
        this.scales = scales.castTo(DataType.FLOAT).dup('c').data().asFloat();
        this.blockRows = blockRows;
        this.blockCols = blockCols;
        this.scaleCols = (int) expected[1];
    }

    /** ⌈n / b⌉: the block grid's size along a dimension of n with blocks of b. */
    public static long ceilDiv(long n, long b) {
        return (n + b - 1) / b;
    }

    /** The float value of one e4m3 code. */
    public static float decode(byte code) {
        return E4M3[code & 0xFF];
    }

    /**
     * Rows r0..r1-1, columns c0..c1-1 dequantized into {@code tile} ('c'-order [r1-r0, c1-c0], FLOAT or DOUBLE).
     */
    public void dequantize(long r0, long r1, long c0, long c1, INDArray tile) {
        if (tile.offset() != 0 || tile.ordering() != 'c' || tile.length() != (r1 - r0) * (c1 - c0)) {
            throw new IllegalArgumentException("an FP8 tile is dequantized into a whole 'c'-order array of "
                    + (r1 - r0) + "×" + (c1 - c0));
        }
        ByteBuffer codes = data().asNio();
        long in = size(1);
        int cols = (int) (c1 - c0);
        boolean single = tile.dataType() == DataType.FLOAT;
        java.nio.FloatBuffer floats = single ? tile.data().asNio().order(java.nio.ByteOrder.nativeOrder())
                .asFloatBuffer() : null;
        java.nio.DoubleBuffer doubles = single ? null : tile.data().asNio().order(java.nio.ByteOrder.nativeOrder())
                .asDoubleBuffer();
        long base = offset();
        for (long r = r0; r < r1; r++) {
            int scaleRow = (int) (r / blockRows) * scaleCols;
            int at = (int) ((r - r0) * cols);
            for (long c = c0; c < c1; c++) {
                float v = E4M3[codes.get((int) (base + r * in + c)) & 0xFF] * scales[scaleRow + (int) (c / blockCols)];
                if (single) {
                    floats.put(at + (int) (c - c0), v);
                } else {
                    doubles.put(at + (int) (c - c0), v);
                }
            }
        }
    }

    /** The whole matrix dequantized into a new float32 [out, in] array. */
    public INDArray dequantize() {
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, shape(), 'c');
        dequantize(0, size(0), 0, size(1), out);
        return out;
    }
}
