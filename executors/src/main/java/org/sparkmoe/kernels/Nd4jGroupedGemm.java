package org.sparkmoe.kernels;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.function.IntConsumer;

/**
 * {@link GroupedGemm} as one BLAS gemm per non-empty group, straight on the arrays' memory ({@link BlasMatrices}:
 * row ranges and weight slices by pointer arithmetic, no per-group views or copies; an array whose layout BLAS
 * cannot take is copied to 'c' order once per call). FLOAT or DOUBLE.
 *
 * <p>Two ways to keep several cores busy: sequential groups with a multi-threaded BLAS ({@code threads = 1},
 * the default; BLAS threads come from {@code OPENBLAS_NUM_THREADS}/{@code OMP_NUM_THREADS}), or groups in
 * parallel ({@code threads > 1}): the groups are dealt to {@code threads} Java threads, balanced by row count
 * (largest first, each to the least-loaded thread), and each thread runs its groups one after another. The
 * parallel mode is meant for a single-threaded BLAS ({@code OPENBLAS_NUM_THREADS=1}); with a multi-threaded
 * one the two kinds of threads oversubscribe the cores. The shares run on this instance's {@link Workers} (the
 * caller's thread runs one itself). No per-call state is kept in fields, so one instance may be used from several
 * threads at once. Groups write disjoint rows (and disjoint weight slices), so the result does not depend on the
 * thread count.
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
    public void forward(INDArray x, WeightStack w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        long out = w.rows();
        int in = (int) w.cols();
        long tile = Widened.rowsPerTile(in);
        BlasMatrices xm = input(x);
        BlasMatrices ym = output(y, accumulate);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, g -> {
            int n = offsets[g + 1] - offsets[g];
            for (long r0 = 0; r0 < out; r0 += tile) {                                  // W_g rows r0..r1-1
                long r1 = Math.min(out, r0 + tile);
                Operand wt = weightTile(w, g, r0, r1, 0, in, x.dataType());
                BlasMatrices.gemm(xm, 0, offsets[g], false, wt.m, wt.matrix, wt.row, true,
                        ym.fromColumn(r0), 0, offsets[g], n, (int) (r1 - r0), in, beta);  // x_g · W_g[r0:r1]ᵀ
            }
        });
        copyBack(ym, y);
    }

    @Override
    public void backwardInput(INDArray dy, WeightStack w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        int out = (int) w.rows();
        long in = w.cols();
        long tile = Widened.colsPerTile(out);
        BlasMatrices dym = input(dy);
        BlasMatrices dxm = output(dx, accumulate);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, g -> {
            int n = offsets[g + 1] - offsets[g];
            for (long c0 = 0; c0 < in; c0 += tile) {                                   // W_g columns c0..c1-1
                long c1 = Math.min(in, c0 + tile);
                Operand wt = weightTile(w, g, 0, out, c0, c1, dy.dataType());
                BlasMatrices.gemm(dym, 0, offsets[g], false, wt.m, wt.matrix, wt.row, false,
                        dxm.fromColumn(c0), 0, offsets[g], n, (int) (c1 - c0), out, beta); // dy_g · W_g[:, c0:c1]
            }
        });
        copyBack(dxm, dx);
    }

    /** A weight tile as BLAS sees it: stacked matrix {@code matrix} of {@code m} from row {@code row}. */
    private record Operand(BlasMatrices m, long matrix, long row) {
    }

    /**
     * Rows r0..r1-1, columns c0..c1-1 of W_g in the {@code compute} type: where it lies, or widened (or copied, for a
     * strided view BLAS cannot take) into scratch.
     */
    private static Operand weightTile(WeightStack w, int g, long r0, long r1, long c0, long c1, DataType compute) {
        BlasMatrices m = w.dataType() == compute ? w.blas(g) : null;
        if (m != null) {
            return new Operand(m.fromColumn(c0), w.stacked() != null ? g : 0, r0);
        }
        return new Operand(Widened.widen(w, g, r0, r1, c0, c1, compute), 0, 0);
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.checkGradient("backwardWeight", x, dw, dy, offsets);
        int out = (int) dw.size(1);
        int in = (int) dw.size(2);
        BlasMatrices dym = input(dy);
        BlasMatrices xm = input(x);
        BlasMatrices dwm = output(dw, accumulate);
        for (int g = 0; g + 1 < offsets.length && !accumulate; g++) {
            if (offsets[g] == offsets[g + 1]) {
                dwm.array().slice(g).assign(0);                                        // no rows: dW_g = 0
            }
        }
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, g -> BlasMatrices.gemm(dym, 0, offsets[g], true, xm, 0, offsets[g], false, dwm, g, 0,
                out, in, offsets[g + 1] - offsets[g], beta));                          // dy_gᵀ · x_g
        copyBack(dwm, dw);
    }

    /** An operand as BLAS sees it: the array itself, or a 'c'-order copy when its layout does not fit. */
    private static BlasMatrices input(INDArray a) {
        checkType(a);
        BlasMatrices m = BlasMatrices.of(a);
        return m != null ? m : BlasMatrices.of(a.dup('c'));
    }

    /** A result: the array itself, or a 'c'-order copy (holding its values when accumulating) to copy back. */
    private static BlasMatrices output(INDArray a, boolean accumulate) {
        checkType(a);
        BlasMatrices m = BlasMatrices.of(a);
        if (m != null) {
            return m;
        }
        return BlasMatrices.of(accumulate ? a.dup('c') : Nd4j.createUninitialized(a.dataType(), a.shape(), 'c'));
    }

    private static void copyBack(BlasMatrices result, INDArray into) {
        if (result.array() != into) {
            into.assign(result.array());
        }
    }

    private static void checkType(INDArray a) {
        if (a.dataType() != DataType.FLOAT && a.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("grouped gemm needs FLOAT or DOUBLE arrays, got " + a.dataType());
        }
    }

    /** Runs op for every non-empty group, in order or dealt to the workers. */
    private void eachGroup(int[] offsets, IntConsumer op) {
        int groups = offsets.length - 1;
        if (workers.threads() == 1) {
            for (int g = 0; g < groups; g++) {
                if (offsets[g] < offsets[g + 1]) {
                    op.accept(g);
                }
            }
            return;
        }
        int[][] shares = deal(offsets, false, workers.threads());
        Runnable[] work = new Runnable[shares.length];
        for (int t = 0; t < shares.length; t++) {
            int[] share = shares[t];
            work[t] = () -> {
                for (int g : share) {
                    op.accept(g);
                }
            };
        }
        workers.run(work);
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
}
