package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The rows of a routing plan as the low-rank experts use them: the gather of token rows into plan order, the
 * scatter-add back, and the per-row scale g·s (routing weight times LoRA scale) in the weights' data type.
 */
final class PlanRows {
    final RoutingPlan plan;
    final Routes routes;
    /** [K][T] plan row of token t, slot k (inverse of plan.perm). */
    private final int[][] rowOfSlot;
    /** [T·K, 1] g·s per plan row. */
    final INDArray rowScale;
    final int tokens;
    final int topK;

    private PlanRows(Routes routes, int[][] rowOfSlot, INDArray rowScale) {
        this.plan = routes.plan;
        this.routes = routes;
        this.rowOfSlot = rowOfSlot;
        this.rowScale = rowScale;
        this.tokens = routes.tokens();
        this.topK = routes.topK();
    }

    /** Bytes {@link #of} allocates: the row scales in the data type, the slot index on the heap. */
    static long bytes(long t, long k, DataType dt) {
        return dt.width() * t * k + 4 * t * k;
    }

    static PlanRows of(Routes routes, double scale, DataType dt, LowRankScratch scratch) {
        RoutingPlan plan = routes.plan;
        int t = routes.tokens();
        int topK = routes.topK();
        int[][] rowOfSlot = new int[topK][t];
        double[] scaleOfRow = new double[plan.rows()];
        for (int row = 0; row < plan.rows(); row++) {
            int pair = plan.perm[row];
            rowOfSlot[pair % topK][pair / topK] = row;
            scaleOfRow[row] = routes.weightOfPair(pair) * scale;
        }
        INDArray rowScale = scratch.count(Nd4j.create(scaleOfRow, new long[] {plan.rows(), 1}, dt)); // [T·K, 1]
        scratch.countHeap(4L * topK * t);
        return new PlanRows(routes, rowOfSlot, rowScale);
    }

    /** dL/dg per plan row [T·K, 1] → per pair p = token·K + slot, float64. */
    double[] byPair(INDArray dWeightOfRow) {
        double[] byRow = dWeightOfRow.dup('c').data().asDouble();
        double[] byPair = new double[byRow.length];
        for (int row = 0; row < byRow.length; row++) {
            byPair[plan.perm[row]] = byRow[row];
        }
        return byPair;
    }

    /**
     * Scatter-add of plan-ordered rows into tokens: {@code out[token(row)] += rows[row]} for every plan row.
     * Pulls the rows of slot k into rows k·T..(k+1)·T−1 of {@code pairBuf} (token order, contiguous) and adds
     * each of the K blocks to {@code out}.
     *
     * @param rows    [T·K, N] plan order
     * @param pairBuf [T·K, N] scratch, overwritten
     * @param out     [T, N]
     */
    void scatterAdd(INDArray rows, INDArray pairBuf, INDArray out) {
        for (int k = 0; k < topK; k++) {
            INDArray block = pairBuf.get(NDArrayIndex.interval((long) k * tokens, (long) (k + 1) * tokens),
                    NDArrayIndex.all());                                            // [T, N] slot k, token order
            Nd4j.pullRows(rows, block, 1, rowOfSlot[k]);
            out.addi(block);
        }
    }

    /** Gather of token rows into plan order: {@code [T, N] → [T·K, N]}, row i = in[token(i)]. */
    INDArray gather(INDArray in, LowRankScratch scratch) {
        INDArray out = scratch.alloc(in.dataType(), plan.rows(), in.size(1));
        Nd4j.pullRows(in, out, 1, plan.tokenOfRow);
        return out;
    }
}
