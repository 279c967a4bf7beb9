package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * {@link GroupedGemm} as one BLAS gemm per non-empty group on row-range views (no copies).
 *
 * <p>Two ways to keep several cores busy: sequential groups with a multi-threaded BLAS ({@code threads = 1},
 * the default; BLAS threads come from {@code OPENBLAS_NUM_THREADS}/{@code OMP_NUM_THREADS}), or groups in
 * parallel ({@code threads > 1}): the groups are dealt to {@code threads} Java threads, balanced by row count
 * (largest first, each to the least-loaded thread), and each thread runs its groups one after another. The
 * parallel mode is meant for a single-threaded BLAS ({@code OPENBLAS_NUM_THREADS=1}); with a multi-threaded
 * one the two kinds of threads oversubscribe the cores. The caller's thread runs one share itself; the other
 * shares go to a fixed pool of daemon threads owned by this instance. No per-call state is kept in fields, so
 * one instance may be used from several threads at once. Groups write disjoint rows (and disjoint weight
 * slices), so the result does not depend on the thread count.
 */
public final class Nd4jGroupedGemm implements GroupedGemm {

    private static final AtomicInteger POOLS = new AtomicInteger();

    private final int threads;
    private final ExecutorService pool;   // threads - 1 workers; null when sequential

    /** Sequential over groups: parallelism, if any, comes from BLAS threads. */
    public Nd4jGroupedGemm() {
        this(1);
    }

    /** @param threads Java threads to spread the groups over; 1 runs them in order on the caller's thread */
    public Nd4jGroupedGemm(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("grouped gemm threads must be at least 1, got " + threads);
        }
        this.threads = threads;
        if (threads == 1) {
            this.pool = null;
        } else {
            int id = POOLS.incrementAndGet();
            AtomicInteger n = new AtomicInteger();
            this.pool = Executors.newFixedThreadPool(threads - 1, r -> {
                Thread t = new Thread(r, "grouped-gemm-" + id + "-" + n.incrementAndGet());
                t.setDaemon(true);
                return t;
            });
        }
    }

    public int threads() {
        return threads;
    }

    @Override
    public void forward(INDArray x, INDArray w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, false, g -> Nd4j.gemm(rows(x, offsets, g), w.slice(g), rows(y, offsets, g),
                false, true, 1.0, beta));                                             // x_g · W_gᵀ
    }

    @Override
    public void backwardInput(INDArray dy, INDArray w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, false, g -> Nd4j.gemm(rows(dy, offsets, g), w.slice(g), rows(dx, offsets, g),
                false, false, 1.0, beta));                                            // dy_g · W_g
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.check("backwardWeight", x, dw, dy, offsets);
        double beta = accumulate ? 1.0 : 0.0;
        eachGroup(offsets, !accumulate, g -> {
            INDArray dwg = dw.slice(g);                                               // [out, in]
            if (offsets[g] < offsets[g + 1]) {
                Nd4j.gemm(rows(dy, offsets, g), rows(x, offsets, g), dwg, true, false, 1.0, beta); // dy_gᵀ · x_g
            } else {
                dwg.assign(0);
            }
        });
    }

    private interface GroupOp {
        void run(int g);
    }

    /** Runs op for every non-empty group (and every empty one when {@code withEmpty}), in order or in parallel. */
    private void eachGroup(int[] offsets, boolean withEmpty, GroupOp op) {
        int groups = offsets.length - 1;
        if (pool == null) {
            for (int g = 0; g < groups; g++) {
                if (withEmpty || offsets[g] < offsets[g + 1]) {
                    op.run(g);
                }
            }
            return;
        }
        int[][] shares = deal(offsets, withEmpty, threads);
        List<Future<?>> pending = new ArrayList<>(shares.length - 1);
        for (int t = 1; t < shares.length; t++) {
            int[] share = shares[t];
            if (share.length > 0) {
                pending.add(pool.submit(() -> runShare(share, op)));
            }
        }
        Throwable failure = null;
        try {
            runShare(shares[0], op);
        } catch (RuntimeException | Error e) {
            failure = e;
        }
        for (Future<?> f : pending) {
            try {
                f.get();
            } catch (ExecutionException e) {
                failure = failure == null ? e.getCause() : failure;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                failure = failure == null ? e : failure;
            }
        }
        if (failure instanceof RuntimeException re) {
            throw re;
        } else if (failure instanceof Error err) {
            throw err;
        } else if (failure != null) {
            throw new IllegalStateException("grouped gemm worker failed", failure);
        }
    }

    private static void runShare(int[] share, GroupOp op) {
        for (int g : share) {
            op.run(g);
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

    /** Rows offsets[g]..offsets[g+1]-1 of a [N, ·] array, as a view. */
    private static INDArray rows(INDArray a, int[] offsets, int g) {
        return a.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all());
    }
}
