package org.sparkmoe.kernels;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Causal attention computed a block of queries × a block of keys at a time (FlashAttention-2's online softmax), so
 * no [S, S] matrix exists, in the forward or the backward. Per (sequence, query head) b·h, query block I and key
 * block J, with z = q·kᵀ · scale:
 * <pre>
 *   forward:  m_i ← max(m_i, max_j z_ij);  p_ij = exp(z_ij − m_i);  l_i ← l_i·exp(m_old − m_i) + Σ_j p_ij;
 *             acc_i ← acc_i·exp(m_old − m_i) + Σ_j p_ij·v_j;  at the end o_i = acc_i / l_i, lse_i = m_i + log l_i
 *   backward: D_i = dO_i·o_i;  p_ij = exp(z_ij − lse_i);  dv_j += Σ_i p_ij·dO_i;  dp_ij = dO_i·v_j;
 *             dz_ij = p_ij·(dp_ij − D_i);  dq_i += scale·Σ_j dz_ij·k_j;  dk_j += scale·Σ_i dz_ij·q_i
 * </pre>
 * Query i sees keys j ≤ i, and j > i − window with a sliding window; key blocks no row of a query block sees are
 * never visited. A sink logit per head (gpt-oss) starts every row's running max and sum (m = sink, l = 1; a sink
 * of −∞ is no sink): it joins
 * the normaliser and is dropped after, and its gradient is −Σ_i exp(sink − lse_i)·D_i. Query head h reads KV head
 * h / (H / KVH) of its sequence (grouped-query attention; MLA passes KVH = H).
 * <p>
 * q [B·H, S, d], k [B·KVH, S, d], v [B·KVH, S, dv], FLOAT or DOUBLE; the two q·kᵀ-sized and p·v-sized products of a
 * block pair go to BLAS, the element-wise work runs in float64 rounded to float32 where a float32 loop would round
 * (on one block at a time, [Bq, Bk] values). What the backward needs is q, k, v, the output and lse [B·H·S]:
 * O(S·d) per head. Stateless apart from its settings: threads may share one.
 */
public final class BlockAttention {
    /** The default query and key block sizes. */
    public static final int BLOCK = 64;

    private final double scale;
    private final Integer window;   // null = full causal
    private final double[] sinks;   // [H] sink logits, or null
    private final int queryBlock;
    private final int keyBlock;

    /**
     * @param scale  the factor on q·kᵀ (hd^-½; MLA's qk_head_dim^-½ times YaRN's mscale²)
     * @param window sliding window (keys j > i − window), or null
     * @param sinks  the per-head sink logits [H], or null
     */
    public BlockAttention(double scale, Integer window, double[] sinks) {
        this(scale, window, sinks, BLOCK, BLOCK);
    }

    /** With explicit block sizes (tests use small ones that do not divide S). */
    public BlockAttention(double scale, Integer window, double[] sinks, int queryBlock, int keyBlock) {
        if (queryBlock < 1 || keyBlock < 1) {
            throw new IllegalArgumentException("attention blocks must hold at least one query and one key, got "
                    + queryBlock + " × " + keyBlock);
        }
        if (!(scale > 0)) {
            throw new IllegalArgumentException("attention's scale on q·kᵀ must be positive, got " + scale);
        }
        if (window != null && window < 1) {
            throw new IllegalArgumentException("sliding window must be at least 1, got " + window);
        }
        this.scale = scale;
        this.window = window;
        this.sinks = sinks;
        this.queryBlock = queryBlock;
        this.keyBlock = keyBlock;
    }

    /**
     * A forward's output and each row's log-sum-exp (with the sink when there is one).
     *
     * @param out [B·H, S, dv], the type of q
     * @param lse [B·H·S], rounded to float32 for FLOAT
     */
    public record Forward(INDArray out, double[] lse) {
    }

    /** @param dq [B·H, S, d], dk [B·KVH, S, d], dv [B·KVH, S, dv]; dSinks [H] or null without sinks */
    public record Gradients(INDArray dq, INDArray dk, INDArray dv, double[] dSinks) {
    }

    /** q [B·H, S, d], k [B·KVH, S, d], v [B·KVH, S, dv] of one type → the attention output and lse. */
    public Forward forward(INDArray q, INDArray k, INDArray v, int heads, int kvHeads) {
        Shapes sh = new Shapes(q, k, v, heads, kvHeads);
        DataType dt = q.dataType();
        int seq = sh.seq;
        int dv = sh.valueDim;
        INDArray out = Nd4j.createUninitialized(dt, new long[] {sh.matrices, seq, dv}, 'c');
        double[] lse = new double[Math.toIntExact(sh.matrices * seq)];
        NativeElements outElements = NativeElements.of(out);
        ForwardPass pass = new ForwardPass(sh, q, k, v);
        for (int bh = 0; bh < sh.matrices; bh++) {
            double sink = sinks == null ? Double.NEGATIVE_INFINITY : sinks[bh % heads];
            for (int i0 = 0; i0 < seq; i0 += queryBlock) {
                int rows = Math.min(queryBlock, seq - i0);
                pass.queryBlock(bh, i0, rows, sink, lse);
                outElements.write(((long) bh * seq + i0) * dv, pass.acc, rows * dv, pass.s.floats);
            }
        }
        return new Forward(out, lse);
    }

    /**
     * One call's pass over the query blocks, with its operands and block buffers. The steps of a pass are methods of
     * their own, each with loops of a block's length, so the JIT compiles each once instead of compiling the whole
     * pass again for every loop it enters hot (on-stack replacement: 2.3 s of C2's time in the tiny eval when the
     * forward was one method).
     */
    private abstract class BlockPass {
        final Shapes sh;
        final BlasMatrices bq;
        final BlasMatrices bk;
        final BlasMatrices bv;
        final boolean single;
        final Scratch s;

        BlockPass(Shapes sh, INDArray q, INDArray k, INDArray v) {
            this.sh = sh;
            this.bq = blas(q);
            this.bk = blas(k);
            this.bv = blas(v);
            this.single = q.dataType() == DataType.FLOAT;
            this.s = new Scratch(q.dataType(), queryBlock, keyBlock, sh.valueDim);
        }
    }

    /** The forward's online softmax over one query block at a time. */
    private final class ForwardPass extends BlockPass {
        final double[] m;       // [Bq] running max
        final double[] l;       // [Bq] running sum
        final double[] acc;     // [Bq, dv] running p·v, then the output rows

        ForwardPass(Shapes sh, INDArray q, INDArray k, INDArray v) {
            super(sh, q, k, v);
            this.m = new double[queryBlock];
            this.l = new double[queryBlock];
            this.acc = new double[queryBlock * sh.valueDim];
        }

        /** Query rows [i0, i0 + rows) of matrix bh: their output rows into {@link #acc}, their lse into lse. */
        void queryBlock(int bh, int i0, int rows, double sink, double[] lse) {
            int kv = sh.kvMatrix(bh);
            int dv = sh.valueDim;
            java.util.Arrays.fill(m, sink);
            java.util.Arrays.fill(l, sink == Double.NEGATIVE_INFINITY ? 0.0 : 1.0);   // exp(sink − m)
            java.util.Arrays.fill(acc, 0.0);
            for (int j0 = firstVisible(i0); j0 < i0 + rows; j0 += keyBlock) {
                keyBlock(bh, kv, i0, rows, j0);
            }
            for (int r = 0; r < rows; r++) {
                for (int c = r * dv; c < (r + 1) * dv; c++) {
                    acc[c] = Flat.round(acc[c] / l[r], single);
                }
                lse[(int) ((long) bh * sh.seq + i0 + r)] = Flat.round(m[r] + Flat.round(Math.log(l[r]), single),
                        single);
            }
        }

        /** Keys [j0, j0 + Bk) against the query block: the running max, sum and p·v updated. */
        private void keyBlock(int bh, int kv, int i0, int rows, int j0) {
            int cols = Math.min(keyBlock, i0 + rows - j0);
            int dv = sh.valueDim;
            BlasMatrices.gemm(bq, bh, i0, false, bk, kv, j0, true, s.blasA, 0, 0, rows, cols, sh.qkDim, 0.0);
            s.a.read(0, s.block, rows * keyBlock, s.floats);                 // [Bq, Bk] = q·kᵀ
            for (int r = 0; r < rows; r++) {
                int i = i0 + r;
                int from = Math.max(j0, firstVisible(i)) - j0;  // visible columns [from, to)
                int to = Math.min(cols, i - j0 + 1);
                row(r, from, to);
            }
            s.a.write(0, s.block, rows * keyBlock, s.floats);               // [Bq, Bk] = p
            BlasMatrices.gemm(s.blasA, 0, 0, false, bv, kv, j0, false, s.blasB, 0, 0, rows, dv, cols, 0.0);
            s.b.read(0, s.rowsOut, rows * dv, s.floats);                     // [Bq, dv] = p·v
            for (int c = 0; c < rows * dv; c++) {
                acc[c] = Flat.round(acc[c] + s.rowsOut[c], single);
            }
        }

        /** Row r of the block's scores, visible in columns [from, to): to p, with its row's max, sum and acc. */
        private void row(int r, int from, int to) {
            int at = r * keyBlock;
            int dv = sh.valueDim;
            // max_c round(z_c·scale) = round(max_c z_c · scale): rounding is monotone and scale > 0,
            // so the row is scaled once, inside expShifted's pass
            double zMax = VectorRows.max(s.block, at + from, to - from);   // −∞ when from ≥ to
            double mNew = Math.max(m[r], Flat.round(zMax * scale, single));
            double sum = 0;
            if (from < to) {
                VectorRows.expShifted(s.block, at + from, to - from, scale, mNew, single);   // p
                sum = sum(s.block, at + from, at + to, single);
            }
            zeroOutside(s.block, at, from, to);
            if (from < to) {
                double shift = Flat.round(m[r] - mNew, single);
                // e^0 = 1 exactly, and a product by 1 changes nothing: the rescale is skipped while the max stays
                double alpha = m[r] == Double.NEGATIVE_INFINITY ? 0.0
                        : shift == 0 ? 1.0 : Flat.round(Exp.exp(shift), single);
                l[r] = Flat.round(Flat.round(l[r] * alpha, single) + sum, single);
                if (alpha != 1.0) {
                    for (int c = r * dv; c < (r + 1) * dv; c++) {
                        acc[c] = Flat.round(acc[c] * alpha, single);
                    }
                }
                m[r] = mNew;
            }
        }
    }

    /**
     * Σ x[i] for i in [from, to), left to right, rounded to float32 after each addition when {@code single}: the
     * float32 case adds in float, which gives those bits (a sum of two floats rounded once to double and again to
     * float is the float sum) without two conversions on the loop's dependency chain.
     */
    private static double sum(double[] x, int from, int to, boolean single) {
        if (single) {
            float sum = 0;
            for (int i = from; i < to; i++) {
                sum += (float) x[i];                      // exact: x holds float32 values
            }
            return sum;
        }
        double sum = 0;
        for (int i = from; i < to; i++) {
            sum += x[i];
        }
        return sum;
    }

    /** block[at + c] = 0 for the columns c of a [·, keyBlock] row outside the visible [from, to). */
    private void zeroOutside(double[] block, int at, int from, int to) {
        int lo = Math.min(Math.max(from, 0), keyBlock);
        int hi = from < to ? Math.min(Math.max(to, lo), keyBlock) : lo;
        java.util.Arrays.fill(block, at, at + lo, 0.0);
        java.util.Arrays.fill(block, at + hi, at + keyBlock, 0.0);
    }

    /**
     * The mirror of {@link #forward}: the probabilities are recomputed block by block from q, k and lse.
     *
     * @param fwd what {@link #forward} returned for these q, k, v
     * @param dOut [B·H, S, dv]
     */
    public Gradients backward(INDArray q, INDArray k, INDArray v, int heads, int kvHeads, Forward fwd,
                              INDArray dOut) {
        Shapes sh = new Shapes(q, k, v, heads, kvHeads);
        DataType dt = q.dataType();
        int seq = sh.seq;
        int dv = sh.valueDim;
        INDArray dq = Nd4j.zeros(dt, q.shape());
        INDArray dk = Nd4j.zeros(dt, k.shape());
        INDArray dvArr = Nd4j.zeros(dt, v.shape());
        double[] dSinks = sinks == null ? null : new double[heads];
        if (dOut.dataType() != dt) {
            throw new IllegalArgumentException("attention's output gradient must be " + dt + " as q, got "
                    + dOut.dataType());
        }
        INDArray dOutC = dOut.ordering() == 'c' ? dOut : dOut.dup('c');
        BackwardPass pass = new BackwardPass(sh, q, k, v, blas(dOutC), blas(dq), blas(dk), blas(dvArr), fwd.lse());
        NativeElements outElements = NativeElements.of(fwd.out());
        NativeElements dOutElements = NativeElements.of(dOutC);
        for (int bh = 0; bh < sh.matrices; bh++) {
            for (int i0 = 0; i0 < seq; i0 += queryBlock) {
                int rows = Math.min(queryBlock, seq - i0);
                long rowAt = (long) bh * seq + i0;
                outElements.read(rowAt * dv, pass.outRows, rows * dv, pass.s.floats);
                dOutElements.read(rowAt * dv, pass.dOutRows, rows * dv, pass.s.floats);
                pass.queryBlock(bh, i0, rows, dSinks);
            }
        }
        return new Gradients(dq, dk, dvArr, dSinks);
    }

    /** The backward over one query block at a time. */
    private final class BackwardPass extends BlockPass {
        final BlasMatrices bdo;
        final BlasMatrices bdq;
        final BlasMatrices bdk;
        final BlasMatrices bdv;
        final double[] lse;
        final double[] outRows;     // [Bq, dv] the block's output rows
        final double[] dOutRows;    // [Bq, dv] and their gradient
        final double[] d;           // [Bq] D_i = dO_i·o_i
        final double[] probs;       // [Bq, Bk]

        BackwardPass(Shapes sh, INDArray q, INDArray k, INDArray v, BlasMatrices bdo, BlasMatrices bdq,
                     BlasMatrices bdk, BlasMatrices bdv, double[] lse) {
            super(sh, q, k, v);
            this.bdo = bdo;
            this.bdq = bdq;
            this.bdk = bdk;
            this.bdv = bdv;
            this.lse = lse;
            this.outRows = new double[queryBlock * sh.valueDim];
            this.dOutRows = new double[queryBlock * sh.valueDim];
            this.d = new double[queryBlock];
            this.probs = new double[queryBlock * keyBlock];
        }

        /**
         * Query rows [i0, i0 + rows) of matrix bh, whose output and its gradient {@link #outRows} and {@link
         * #dOutRows} hold: their part of dq, dk, dv and dSinks.
         */
        void queryBlock(int bh, int i0, int rows, double[] dSinks) {
            int kv = sh.kvMatrix(bh);
            long rowAt = (long) bh * sh.seq + i0;
            int dv = sh.valueDim;
            for (int r = 0; r < rows; r++) {
                double dot = 0;
                for (int c = r * dv; c < (r + 1) * dv; c++) {
                    dot = Flat.round(dot + Flat.round(dOutRows[c] * outRows[c], single), single);
                }
                d[r] = dot;
                if (dSinks != null) {
                    dSinks[bh % sh.heads] -= Math.exp(sinks[bh % sh.heads] - lse[(int) (rowAt + r)]) * dot;
                }
            }
            for (int j0 = firstVisible(i0); j0 < i0 + rows; j0 += keyBlock) {
                keyBlock(bh, kv, i0, rows, j0);
            }
        }

        /** Keys [j0, j0 + Bk) against the query block: p recomputed, then the block's products' gradients. */
        private void keyBlock(int bh, int kv, int i0, int rows, int j0) {
            int cols = Math.min(keyBlock, i0 + rows - j0);
            int dv = sh.valueDim;
            long rowAt = (long) bh * sh.seq + i0;
            // p = exp(q·kᵀ·scale − lse), zero off the mask
            BlasMatrices.gemm(bq, bh, i0, false, bk, kv, j0, true, s.blasA, 0, 0, rows, cols, sh.qkDim, 0.0);
            s.a.read(0, probs, rows * keyBlock, s.floats);
            for (int r = 0; r < rows; r++) {
                int i = i0 + r;
                int at = r * keyBlock;
                int from = Math.max(j0, firstVisible(i)) - j0;
                int to = Math.min(cols, i - j0 + 1);
                if (from < to) {
                    VectorRows.expShifted(probs, at + from, to - from, scale, lse[(int) (rowAt + r)], single);
                }
                zeroOutside(probs, at, from, to);
            }
            s.a.write(0, probs, rows * keyBlock, s.floats);
            // o = p·v  →  dv += pᵀ·dO, dp = dO·vᵀ
            BlasMatrices.gemm(s.blasA, 0, 0, true, bdo, bh, i0, false, bdv, kv, j0, cols, dv, rows, 1.0);
            BlasMatrices.gemm(bdo, bh, i0, false, bv, kv, j0, true, s.blasA, 0, 0, rows, cols, dv, 0.0);
            s.a.read(0, s.block, rows * keyBlock, s.floats);
            for (int r = 0; r < rows; r++) {
                softmaxGradient(r);
            }
            s.a.write(0, s.block, rows * keyBlock, s.floats);
            // z = q·kᵀ  →  dq += dz·k, dk += dzᵀ·q
            BlasMatrices.gemm(s.blasA, 0, 0, false, bk, kv, j0, false, bdq, bh, i0, rows, sh.qkDim, cols, 1.0);
            BlasMatrices.gemm(s.blasA, 0, 0, true, bq, bh, i0, false, bdk, kv, j0, cols, sh.qkDim, rows, 1.0);
        }

        /** Row r: p = softmax(z)  →  dz = p ⊙ (dp − D), times scale for z = q·kᵀ·scale (dp in, dz out). */
        private void softmaxGradient(int r) {
            for (int c = r * keyBlock; c < (r + 1) * keyBlock; c++) {
                s.block[c] = probs[c] == 0.0 ? 0.0 : Flat.round(Flat.round(probs[c]
                        * Flat.round(s.block[c] - d[r], single), single) * scale, single);
            }
        }
    }

    /** The first key position query i sees: 0, or i − window + 1 with a sliding window. */
    private int firstVisible(int i) {
        return window == null ? 0 : Math.max(0, i - window + 1);
    }

    private static BlasMatrices blas(INDArray a) {
        BlasMatrices b = BlasMatrices.of(a);
        return b != null ? b : BlasMatrices.of(a.dup('c'));
    }

    /** The sizes of one call, checked against each other. */
    private static final class Shapes {
        final long matrices;  // B·H
        final int seq;        // S
        final int qkDim;      // d
        final int valueDim;   // dv
        final int heads;
        final int kvHeads;

        Shapes(INDArray q, INDArray k, INDArray v, int heads, int kvHeads) {
            if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3 || heads % kvHeads != 0
                    || q.size(0) % heads != 0 || k.size(0) != q.size(0) / heads * kvHeads || v.size(0) != k.size(0)
                    || k.size(1) != q.size(1) || v.size(1) != q.size(1) || k.size(2) != q.size(2)
                    || q.dataType() != k.dataType() || q.dataType() != v.dataType()) {
                throw new IllegalArgumentException("attention expects q [B·H, S, d], k [B·KVH, S, d], v [B·KVH, S, dv]"
                        + " of one type with H = " + heads + ", KVH = " + kvHeads + "; got q "
                        + java.util.Arrays.toString(q.shape()) + " " + q.dataType() + ", k "
                        + java.util.Arrays.toString(k.shape()) + ", v " + java.util.Arrays.toString(v.shape()));
            }
            this.matrices = q.size(0);
            this.seq = Math.toIntExact(q.size(1));
            this.qkDim = Math.toIntExact(q.size(2));
            this.valueDim = Math.toIntExact(v.size(2));
            this.heads = heads;
            this.kvHeads = kvHeads;
        }

        /** The KV matrix query matrix bh = b·H + h reads: b·KVH + h / (H / KVH). */
        int kvMatrix(long bh) {
            return Math.toIntExact(bh / heads * kvHeads + bh % heads / (heads / kvHeads));
        }
    }

    /** One call's block buffers: two [Bq, Bk]-or-[Bq, dv] native matrices and their float64 views. */
    private static final class Scratch {
        final NativeElements a;     // [Bq, Bk]: scores, then p or dz
        final NativeElements b;     // [Bq, dv]: p·v
        final BlasMatrices blasA;
        final BlasMatrices blasB;
        final double[] block;       // [Bq·Bk]
        final double[] rowsOut;     // [Bq·dv]
        final float[] floats;       // a float32 staging row for NativeElements

        Scratch(DataType dt, int queryBlock, int keyBlock, int dv) {
            INDArray aArr = Nd4j.createUninitialized(dt, new long[] {queryBlock, keyBlock}, 'c');
            INDArray bArr = Nd4j.createUninitialized(dt, new long[] {queryBlock, dv}, 'c');
            this.a = NativeElements.of(aArr);
            this.b = NativeElements.of(bArr);
            this.blasA = BlasMatrices.of(aArr);
            this.blasB = BlasMatrices.of(bArr);
            this.block = new double[queryBlock * keyBlock];
            this.rowsOut = new double[queryBlock * dv];
            this.floats = new float[Math.max(queryBlock * keyBlock, queryBlock * dv)];
        }
    }
}
