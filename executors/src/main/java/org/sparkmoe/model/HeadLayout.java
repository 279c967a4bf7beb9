package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.NativeElements;

/**
 * n heads of hd values: batch-major projection rows [B·S, n·hd] ↔ per-head matrices [B·n, S, hd], in the array's
 * own type (FLOAT or DOUBLE; ND4J permutes, no float64 copy), with RoPE applied per position on the way in, and its
 * transpose (the rotation back) on a gradient's way out. RoPE acts on the entries of each head from {@code ropeAt}
 * on: 0 for GQA, the no-rope part's length dn for MLA's [nope | rope] heads.
 */
final class HeadLayout {
    private final int n;
    private final int headDim;
    private final int ropeAt;

    HeadLayout(int n, int headDim) {
        this(n, headDim, 0);
    }

    /** @param ropeAt where the rotated part of each head starts (MLA: qk_nope_head_dim) */
    HeadLayout(int n, int headDim, int ropeAt) {
        if (ropeAt < 0 || ropeAt >= headDim) {
            throw new IllegalArgumentException("the rotated part of a head of " + headDim + " must start in it, got "
                    + ropeAt);
        }
        this.n = n;
        this.headDim = headDim;
        this.ropeAt = ropeAt;
    }

    int count() {
        return n;
    }

    /** [B·S, n·hd] → [B·n, S, hd], each row rotated for its position when {@code rope} is given. */
    INDArray split(INDArray rows, int batch, int seq, RotaryEmbedding rope) {
        INDArray heads = rows.reshape('c', batch, seq, n, headDim).permute(0, 2, 1, 3).dup('c')
                .reshape('c', (long) batch * n, seq, headDim);
        if (rope != null) {
            rotate(heads, seq, rope, false);
        }
        return heads;
    }

    /** [B·n, S, hd] → [B·S, n·hd]; a gradient is first rotated back by position when {@code ropeBack} is given. */
    INDArray merge(INDArray heads, int batch, int seq, RotaryEmbedding ropeBack) {
        INDArray h = heads;
        if (ropeBack != null) {
            h = heads.dup('c');
            rotate(h, seq, ropeBack, true);
        }
        return h.reshape('c', batch, n, seq, headDim).permute(0, 2, 1, 3).dup('c')
                .reshape('c', (long) batch * seq, (long) n * headDim);
    }

    /** In place on 'c'-order [M, S, hd], one [S, hd] matrix at a time. */
    private void rotate(INDArray heads, int seq, RotaryEmbedding rope, boolean back) {
        boolean single = heads.dataType() == org.nd4j.linalg.api.buffer.DataType.FLOAT;
        NativeElements elements = NativeElements.of(heads);
        int size = seq * headDim;
        double[] in = new double[size];
        double[] out = new double[size];
        float[] staging = new float[size];
        for (long m = 0; m < heads.size(0); m++) {
            elements.read(m * size, in, size, staging);
            if (ropeAt > 0) {
                System.arraycopy(in, 0, out, 0, size);   // the parts before ropeAt pass unchanged
            }
            for (int s = 0; s < seq; s++) {
                int at = s * headDim + ropeAt;
                if (back) {
                    rope.rotateBack(in, at, out, at, s);
                } else {
                    rope.rotate(in, at, out, at, s, single);
                }
            }
            elements.write(m * size, out, size, staging);
        }
    }
}
