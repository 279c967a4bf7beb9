package org.sparkmoe.io;

import java.nio.ByteBuffer;

/**
 * One weight matrix [rows, cols] (Linear layout, cols the input) stored as MXFP4, as gpt-oss releases its experts
 * ({@code *_blocks} U8 [E, rows, cols/32, 16], {@code *_scales} U8 [E, rows, cols/32]; transformers 5.17
 * {@code integrations/mxfp4.py}): every 32 values along a row share one e8m0 scale byte s (the factor 2^(s − 127)),
 * every byte holds two e2m1 codes, the low nibble the even element; a code's value is {@link #VALUES}[code].
 * Rows are read from {@code blocks} and {@code scales} starting at byte {@code blocksAt} / {@code scalesAt}, one row
 * every {@code rowStep} stored rows (gpt-oss's gate and up are the even and odd rows of its fused gate_up). The
 * buffers are read-only views (a memory map); nothing is copied until {@link #decode} widens a tile. Immutable.
 */
public final class Mxfp4 {
    /** e2m1 code → value (transformers' FP4_VALUES): codes 8..15 are the negatives of 0..7. */
    public static final float[] VALUES = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
        -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
    /** Values per scale. */
    public static final int BLOCK = 32;

    private final ByteBuffer blocks;
    private final ByteBuffer scales;
    private final long blocksAt;
    private final long scalesAt;
    private final int rowStep;
    private final long rows;
    private final long cols;

    /**
     * @param blocks   the stored blocks of the whole tensor
     * @param scales   the stored scales of the whole tensor
     * @param blocksAt byte of row 0 in {@code blocks}
     * @param scalesAt byte of row 0 in {@code scales}
     * @param rowStep  stored rows from one row of this matrix to the next
     */
    public Mxfp4(ByteBuffer blocks, ByteBuffer scales, long blocksAt, long scalesAt, int rowStep, long rows,
                 long cols) {
        if (cols % BLOCK != 0) {
            throw new IllegalArgumentException("MXFP4 rows hold whole blocks of 32 values, got " + cols + " columns");
        }
        long lastRow = (rows - 1) * rowStep;
        if (rows < 1 || blocksAt + (lastRow + 1) * (cols / 2) > blocks.capacity()
                || scalesAt + (lastRow + 1) * (cols / BLOCK) > scales.capacity()) {
            throw new IllegalArgumentException("MXFP4 matrix [" + rows + ", " + cols + "] every " + rowStep
                    + " rows does not fit its blocks (" + blocks.capacity() + " bytes) and scales ("
                    + scales.capacity() + " bytes)");
        }
        this.blocks = blocks;
        this.scales = scales;
        this.blocksAt = blocksAt;
        this.scalesAt = scalesAt;
        this.rowStep = rowStep;
        this.rows = rows;
        this.cols = cols;
    }

    public long rows() {
        return rows;
    }

    public long cols() {
        return cols;
    }

    /** Bytes of blocks and scales this matrix reads. */
    public long bytes() {
        return rows * (cols / 2 + cols / BLOCK);
    }

    /**
     * Rows r0..r1-1, columns c0..c1-1 decoded into {@code out[at ..]} row-major ([r1-r0, c1-c0]); exact in float32
     * (a code's value times a power of two).
     */
    public void decode(long r0, long r1, long c0, long c1, float[] out, int at) {
        int width = (int) (c1 - c0);
        for (long r = r0; r < r1; r++) {
            long stored = r * rowStep;
            long rowBlocks = blocksAt + stored * (cols / 2);
            long rowScales = scalesAt + stored * (cols / BLOCK);
            int o = at + (int) (r - r0) * width;
            float scale = Float.NaN;
            long scaleOf = -1;
            for (long c = c0; c < c1; c++) {
                long block = c / BLOCK;
                if (block != scaleOf) {
                    scale = Math.scalb(1.0f, (scales.get((int) (rowScales + block)) & 0xFF) - 127);
                    scaleOf = block;
                }
                int packed = blocks.get((int) (rowBlocks + c / 2)) & 0xFF;
                int code = (c & 1) == 0 ? packed & 0x0F : packed >>> 4;
                out[o++] = VALUES[code] * scale;
            }
        }
    }

    /** The whole matrix decoded: a new float[rows·cols], row-major. */
    public float[] decode() {
        float[] out = new float[Math.toIntExact(rows * cols)];
        decode(0, rows, 0, cols, out, 0);
        return out;
    }
}
