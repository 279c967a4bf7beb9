package org.sparkmoe.kernels;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * {@link GroupedGemm} as one BLAS gemm per non-empty group on row-range views (no copies).
 *
 * <p>Two ways to keep several cores busy: sequential groups with a multi-threaded BLAS ({@code threads = 1},
 * the default; BLAS threads come from {@code OPENBLAS_NUM_THREADS}/{@code OMP_NUM_THREADS}), or groups in
 * parallel ({@code threads > 1}): the groups are dealt to {@code threads} Java threads, balanced by row count
 * (largest first, each to the least-loaded thread), and each thread runs its groups one after another. The
 * parallel mode is meant for a single-threaded BLAS ({@code OPENBLAS_NUM_THREADS=1}); with a multi-threaded
 * one the two kinds of threads oversubscribe the cores. The shares run on this instance's {@link Workers} (the
 * caller's thread runs one itself). No per-call state is kept in fields, so one instance may be used from several
 * threads at once. Groups write disjoint rows (and disjoint weight
 * slices), so the result does not depend on the thread count.
 */
public final class Nd4jGroupedGemm implements GroupedGemm {

    private final Workers workers;

    /** Sequential over groups: parallelism, if any, comes from BLAS threads. */
    public Nd4jGroupedGemm() {
        this(1);
    }

    /** @param threads Java threads to spread the groups over; 1 runs them in order on the caller's thread */
    public Nd4jGroupedGemm(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("grouped gemm threads must be at least 1, got " + threads);
        }
        this.workers = threads == 1 ? Workers.SERIAL : new Workers(threads);
    }

    public int threads() {
        return workers.threads();
    }

    /** The threads the groups are spread over. */
    @Override
    public Workers workers() {
        return workers;
    }

    @Override
    public void forward(INDArray x, INDArray w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, false, g -> gemm(rows(x, offsets, g), false, w.slice(g), true, rows(y, offsets, g),
                beta));                                                               // x_g · W_gᵀ
    }

    @Override
    public void backwardInput(INDArray dy, INDArray w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, false, g -> gemm(rows(dy, offsets, g), false, w.slice(g), false, rows(dx, offsets, g),
                beta));                                                               // dy_g · W_g
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.check("backwardWeight", x, dw, dy, offsets);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, !accumulate, g -> {
            INDArray dwg = dw.slice(g);                                               // [out, in]
            if (offsets[g] < offsets[g + 1]) {
                return gemm(rows(dy, offsets, g), true, rows(x, offsets, g), false, dwg, beta); // dy_gᵀ · x_g
            }
            dwg.assign(0);
            return null;
        });
    }

    /**
     * Prepares the work of group g on the caller's thread: makes its views (ND4J's native shape cache is not
     * safe to fill from several threads at once: concurrent {@code get(interval)} crashed the JVM in
     * {@code ConstantShapeHelper::bufferForShapeInfo}) and returns a call that touches only BLAS, or does the
     * work itself and returns null.
     */
    private interface GroupOp {
        Runnable prepare(int g);
    }

    /** Runs op for every non-empty group (and every empty one when {@code withEmpty}), in order or in parallel. */
    private void eachGroup(int[] offsets, boolean withEmpty, GroupOp op) {
        int groups = offsets.length - 1;
        if (workers.threads() == 1) {
            for (int g = 0; g < groups; g++) {
                if (withEmpty || offsets[g] < offsets[g + 1]) {
                    Runnable call = op.prepare(g);
                    if (call != null) {
                        call.run();
                    }
                }
            }
            return;
        }
        Runnable[] calls = new Runnable[groups];
        for (int g = 0; g < groups; g++) {
            if (withEmpty || offsets[g] < offsets[g + 1]) {
                calls[g] = op.prepare(g);
            }
        }
        int[][] shares = deal(offsets, false, workers.threads());
        Runnable[] work = new Runnable[shares.length];
        for (int t = 0; t < shares.length; t++) {
            int[] share = shares[t];
            work[t] = () -> runShare(share, calls);
        }
        workers.run(work);
    }

    private static void runShare(int[] share, Runnable[] calls) {
        for (int g : share) {
            if (calls[g] != null) {
                calls[g].run();
            }
        }
    }

    /**
     * Deals the groups to {@code threads} shares balanced by rows: largest group first, each to the share with
     * the fewest rows so far (ties to the lower share). Within a share groups keep ascending order.
     */
    static int[][] deal(int[] offsets, boolean withEmpty, int threads) {
        int groups = offsets.length - 1;
        List<Integer> order = new ArrayList<>(groups);
        for (int g = 0; g < groups; g++) {
            if (withEmpty || offsets[g] < offsets[g + 1]) {
                order.add(g);
            }
        }
        order.sort(Comparator.comparingInt((Integer g) -> offsets[g + 1] - offsets[g]).reversed()
                .thenComparingInt(g -> g));
        long[] load = new long[threads];
        List<List<Integer>> shares = new ArrayList<>(threads);
        for (int t = 0; t < threads; t++) {
            shares.add(new ArrayList<>());
        }
        for (int g : order) {
            int best = 0;
            for (int t = 1; t < threads; t++) {
                if (load[t] < load[best]) {
                    best = t;
                }
            }
            load[best] += offsets[g + 1] - offsets[g] + 1L;   // +1: every group has a fixed call cost
            shares.get(best).add(g);
        }
        int[][] out = new int[threads][];
        for (int t = 0; t < threads; t++) {
            out[t] = shares.get(t).stream().mapToInt(Integer::intValue).toArray();
            Arrays.sort(out[t]);
        }
        return out;
    }

    /**
     * Prepares {@code c = op(a)·op(b) + beta·c}. Row-major matrices with unit column stride (every row range of a 'c'
     * array, every slice of a 'c' [G, ·, ·] array) go straight to {@code cblas_sgemm}/{@code cblas_dgemm} on
     * pointers into their buffers: the same OpenBLAS that ND4J calls, without the ~20 µs of op dispatch per call
     * that dominates the rank-R LoRA products of small groups; returns the call. Anything else goes through
     * {@link Nd4j#gemm} at once (returns null).
     */
    static Runnable gemm(INDArray a, boolean transA, INDArray b, boolean transB, INDArray c, double beta) {
        DataType type = c.dataType();
        long lda = leading(a);
        long ldb = leading(b);
        long ldc = leading(c);
        if (lda < 0 || ldb < 0 || ldc < 0 || a.dataType() != type || b.dataType() != type
                || (type != DataType.FLOAT && type != DataType.DOUBLE)) {
            Nd4j.gemm(a, b, c, transA, transB, 1.0, beta);
            return null;
        }
        int m = (int) c.size(0);
        int n = (int) c.size(1);
        int k = (int) (transA ? a.size(0) : a.size(1));
        int ta = transA ? openblas.CblasTrans : openblas.CblasNoTrans;
        int tb = transB ? openblas.CblasTrans : openblas.CblasNoTrans;
        if (type == DataType.FLOAT) {
            FloatPointer pa = floats(a);
            FloatPointer pb = floats(b);
            FloatPointer pc = floats(c);
            INDArray[] keepAlive = {a, b, c};   // the pointers do not own their memory
            return () -> {
                openblas.cblas_sgemm(openblas.CblasRowMajor, ta, tb, m, n, k, 1f, pa, (int) lda, pb, (int) ldb,
                        (float) beta, pc, (int) ldc);
                java.lang.ref.Reference.reachabilityFence(keepAlive);
            };
        }
        DoublePointer pa = doubles(a);
        DoublePointer pb = doubles(b);
        DoublePointer pc = doubles(c);
        INDArray[] keepAlive = {a, b, c};
        return () -> {
            openblas.cblas_dgemm(openblas.CblasRowMajor, ta, tb, m, n, k, 1.0, pa, (int) lda, pb, (int) ldb, beta,
                    pc, (int) ldc);
            java.lang.ref.Reference.reachabilityFence(keepAlive);
        };
    }

    /** The row stride of a row-major rank-2 array with unit column stride, or −1 when it is not one. */
    private static long leading(INDArray a) {
        if (a.rank() != 2 || a.size(0) == 0 || a.size(1) == 0 || a.data() == null || a.data().addressPointer() == null) {
            return -1;
        }
        long cols = a.size(1);
        if (cols > 1 && a.stride(1) != 1) {
            return -1;
        }
        long ld = a.size(0) == 1 ? cols : a.stride(0);
        return ld >= cols && ld <= Integer.MAX_VALUE ? ld : -1;
    }

    /**
     * The address of a's first element. A view's {@code data()} is its own buffer object whose address already
     * includes the view's offset ({@code data().offset()}), so only the remainder {@code offset() −
     * data().offset()} (0 in every case seen) is added.
     */
    private static FloatPointer floats(INDArray a) {
        return new FloatPointer(a.data().addressPointer()).position(a.offset() - a.data().offset());
    }

    private static DoublePointer doubles(INDArray a) {
        return new DoublePointer(a.data().addressPointer()).position(a.offset() - a.data().offset());
    }

    /** Rows offsets[g]..offsets[g+1]-1 of a [N, ·] array, as a view. */
    private static INDArray rows(INDArray a, int[] offsets, int g) {
        return a.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all());
    }
}
