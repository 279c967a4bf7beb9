package org.sparkmoe.kernels;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Element-wise pieces of the gated FFN: {@code act = silu(h1) ⊙ h3} (or another {@link GatedActivation}, gpt-oss's
 * clamped one) and its backward, for FLOAT or DOUBLE arrays behind one method. Values are computed in float64 and, for
 * FLOAT, rounded to float32 exactly where a float32 loop rounds (silu, then the product); silu(z) = z·σ(z),
 * σ'(z) = σ(z)(1 − σ(z)). Chunk by chunk through {@link GatedActivation}'s chunk methods (SwiGLU's vectorised). The
 * rows are split over a {@link Workers}; the result does not depend on the thread count.
 */
public final class Activations {
    /** Elements per bulk copy between native memory and the Java loop; a multiple of the activations' lanes. */
    private static final int CHUNK = 2048;

    static {
        if (CHUNK % GatedActivation.LANE_MULTIPLE != 0) {
            throw new IllegalStateException("chunk " + CHUNK + " is not a multiple of " + GatedActivation.LANE_MULTIPLE);
        }
    }
    /** Fewer elements than this per thread are not worth a thread. */
    private static final int MIN_ELEMENTS_PER_THREAD = 1 << 15;

    private Activations() {
    }

    /** silu(gate) ⊙ up on the caller's thread. */
    public static INDArray swiGlu(INDArray gate, INDArray up) {
        return swiGlu(gate, up, Workers.SERIAL);
    }

    /** h1, h3 [N, I] → new act [N, I] = silu(h1) ⊙ h3, rows split over {@code workers}. */
    public static INDArray swiGlu(INDArray h1, INDArray h3, Workers workers) {
        return gated(GatedActivation.SWIGLU, h1, h3, workers);
    }

    /** h1, h3 [N, I] → new act [N, I] = f(h1, h3) by {@code f}, rows split over {@code workers}. */
    public static INDArray gated(GatedActivation f, INDArray h1, INDArray h3, Workers workers) {
        checkSame("swiglu forward", h1, h3);
        boolean single = h1.dataType() == DataType.FLOAT;
        INDArray act = Nd4j.createUninitialized(h1.dataType(), h1.shape(), 'c');          // [N, I]
        if (act.length() == 0) {
            return act;
        }
        NativeElements g = NativeElements.of(h1);
        NativeElements u = NativeElements.of(h3);
        NativeElements a = NativeElements.of(act);
        eachChunk(act, workers, () -> new double[3][CHUNK], (from, n, buf, scratch) -> {
            double[] gv = buf[0];
            double[] uv = buf[1];
            double[] av = buf[2];
            g.read(from, gv, n, scratch);
            u.read(from, uv, n, scratch);
            f.forward(gv, uv, av, n, single);
            a.write(from, av, n, scratch);
        });
        return act;
    }

    /**
     * The mirror of {@link #swiGlu(INDArray, INDArray, Workers)}: dh1 = dact ⊙ h3 ⊙ σ(h1)(1 + h1(1 − σ(h1))),
     * dh3 = dact ⊙ silu(h1), each computed in float64 and rounded once.
     *
     * @param h1   [N, I]
     * @param h3   [N, I]
     * @param dAct [N, I]
     * @return {dh1, dh3}, each a new [N, I]
     */
    public static INDArray[] swiGluBackward(INDArray h1, INDArray h3, INDArray dAct, Workers workers) {
        return gatedBackward(GatedActivation.SWIGLU, h1, h3, dAct, workers);
    }

    /**
     * The mirror of {@link #gated}: dh1 = dact ⊙ ∂f/∂h1, dh3 = dact ⊙ ∂f/∂h3, each in float64 and rounded once.
     *
     * @return {dh1, dh3}, each a new [N, I]
     */
    public static INDArray[] gatedBackward(GatedActivation f, INDArray h1, INDArray h3, INDArray dAct,
                                           Workers workers) {
        checkSame("swiglu backward", h1, h3);
        checkSame("swiglu backward", h1, dAct);
        INDArray dh1 = Nd4j.createUninitialized(h1.dataType(), h1.shape(), 'c');          // [N, I]
        INDArray dh3 = Nd4j.createUninitialized(h1.dataType(), h1.shape(), 'c');          // [N, I]
        if (dh1.length() == 0) {
            return new INDArray[] {dh1, dh3};
        }
        NativeElements g = NativeElements.of(h1);
        NativeElements u = NativeElements.of(h3);
        NativeElements d = NativeElements.of(dAct);
        NativeElements dg = NativeElements.of(dh1);
        NativeElements du = NativeElements.of(dh3);
        eachChunk(dh1, workers, () -> new double[5][CHUNK], (from, n, buf, scratch) -> {
            double[] gv = buf[0];
            double[] uv = buf[1];
            double[] dv = buf[2];
            double[] dgv = buf[3];
            double[] duv = buf[4];
            g.read(from, gv, n, scratch);
            u.read(from, uv, n, scratch);
            d.read(from, dv, n, scratch);
            f.backward(gv, uv, dv, dgv, duv, n);
            dg.write(from, dgv, n, scratch);
            du.write(from, duv, n, scratch);
        });
        return new INDArray[] {dh1, dh3};
    }

    /** One chunk of at most {@link #CHUNK} elements starting at element {@code from}, with a thread's buffers. */
    private interface ChunkBody {
        void run(long from, int n, double[][] buffers, float[] scratch);
    }

    /** Splits the rows of {@code like} [N, ·] over the workers; each thread walks its elements chunk by chunk. */
    private static void eachChunk(INDArray like, Workers workers, java.util.function.Supplier<double[][]> buffers,
                                  ChunkBody body) {
        int rows = (int) like.size(0);
        long cols = like.length() / rows;
        int minRows = (int) Math.max(1, MIN_ELEMENTS_PER_THREAD / cols);
        workers.forRanges(rows, minRows, (rowFrom, rowTo) -> {
            double[][] buf = buffers.get();
            float[] scratch = new float[CHUNK];
            long end = rowTo * cols;
            for (long at = rowFrom * cols; at < end; at += CHUNK) {
                body.run(at, (int) Math.min(CHUNK, end - at), buf, scratch);
            }
        });
    }

    private static void checkSame(String op, INDArray a, INDArray b) {
        if (!Arrays.equals(a.shape(), b.shape()) || a.dataType() != b.dataType()) {
            throw new IllegalArgumentException(op + ": arrays disagree, " + Arrays.toString(a.shape()) + " "
                    + a.dataType() + " vs " + Arrays.toString(b.shape()) + " " + b.dataType());
        }
        if (a.dataType() != DataType.FLOAT && a.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException(op + ": data type must be FLOAT or DOUBLE, got " + a.dataType());
        }
        if (a.rank() != 2) {
            throw new IllegalArgumentException(op + ": arrays must be [N, I], got " + Arrays.toString(a.shape()));
        }
    }
}
