package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.VectorRows;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The combine of routed experts that compute one output row per plan row ({@link FullExperts}, {@link CpExperts},
 * {@link TrExperts}):
 * {@code out[t] = Σ g·ys[row]} over token t's rows in plan order (ascending expert), in float64 rounded to float32
 * at every operation in FLOAT, so it is bit-identical to a float32 loop whatever the split of tokens over the
 * workers; and the row bookkeeping their backward passes share (the combine's reverse, the sums of rows back to
 * their tokens or experts).
 */
final class RowCombine {
    private RowCombine() {
    }

    /**
     * @param ys     [N, D] every plan row's expert output, in plan order
     * @param routes the routing decision whose plan the rows follow
     * @param tokens T
     * @return [T, D]
     */
    static INDArray combine(INDArray ys, Routes routes, int tokens, int hidden, DataType dataType, Workers workers) {
        RoutingPlan plan = routes.plan;
        if (ys.rank() != 2 || ys.size(0) != plan.rows() || ys.size(1) != hidden || ys.dataType() != dataType) {
            throw new IllegalArgumentException("ys must be [" + plan.rows() + ", " + hidden + "] " + dataType
                    + " (N, D), got " + Arrays.toString(ys.shape()) + " " + ys.dataType());
        }
        boolean single = dataType == DataType.FLOAT;
        INDArray out = Nd4j.createUninitialized(dataType, new long[] {tokens, hidden}, 'c');     // [T, D]
        if (out.length() > 0) {
            NativeElements yRows = rowsOf(ys);                                          // [N, D]
            NativeElements outRows = NativeElements.of(out);
            int[] rowsOfToken = rowsOfToken(plan, tokens);                             // [T·K]
            int k = plan.topK;
            workers.forRanges(tokens, minTokens(hidden), (from, to) -> {
                double[] acc = new double[hidden];                                     // out[t]
                double[] y = new double[hidden];                                       // one row of ys
                float[] scratch = new float[hidden];
                for (int t = from; t < to; t++) {
                    Arrays.fill(acc, 0.0);
                    for (int j = t * k; j < (t + 1) * k; j++) {
                        int row = rowsOfToken[j];
                        yRows.read((long) row * hidden, y, hidden, scratch);
                        VectorRows.addScaled(acc, 0, routes.weightOfPair(plan.perm[row]), y, hidden, single);
                    }
                    outRows.write((long) t * hidden, acc, hidden, scratch);
                }
            });
        }
        return out;
    }

    /**
     * The reverse of {@link #combine}, {@code out[t] = Σ g·ys[row]}: {@code dys[row] = g·dOut[t]} and
     * {@code dL/dg = dOut[t]·ys[row]} (summed in order: a fixed sum), rows split over the workers.
     *
     * @param dOut     [T, D]
     * @param ys       [N, D] the forward's rows
     * @param dWeights [T·K] written: dL/dg per (token, slot) pair, pair order
     * @return dys [N, D]
     */
    static INDArray backward(INDArray dOut, INDArray ys, Routes routes, double[] dWeights, Workers workers) {
        RoutingPlan plan = routes.plan;
        int hidden = (int) dOut.size(1);
        INDArray dysArray = Nd4j.createUninitialized(dOut.dataType(), new long[] {plan.rows(), hidden}, 'c');
        if (dysArray.length() > 0) {
            NativeElements dOutRows = NativeElements.of(dOut);                         // [T, D]
            NativeElements yRows = rowsOf(ys);                                         // [N, D]
            NativeElements dys = rowsOf(dysArray);                                     // [N, D]
            workers.forRanges(plan.rows(), minTokens(hidden), (from, to) -> {
                double[] dy = new double[hidden];                                      // dOut[t]
                double[] y = new double[hidden];                                       // one row of ys
                double[] dyRow = new double[hidden];                                   // one row of dys
                float[] scratch = new float[hidden];
                for (int row = from; row < to; row++) {
                    double g = routes.weightOfPair(plan.perm[row]);
                    dOutRows.read((long) plan.tokenOfRow[row] * hidden, dy, hidden, scratch);
                    yRows.read((long) row * hidden, y, hidden, scratch);
                    VectorRows.scale(dyRow, g, dy, 0, hidden);
                    double dg = 0;
                    for (int d = 0; d < hidden; d++) {                                 // in order: a fixed sum
                        dg += dy[d] * y[d];
                    }
                    dys.write((long) row * hidden, dyRow, hidden, scratch);
                    dWeights[plan.perm[row]] = dg;
                }
            });
        }
        return dysArray;
    }

    /**
     * The reverse of gathering a token's row to each of its plan rows ({@code rows = a[tokenOfRow]}):
     * {@code da[t] = Σ rows[row]} over t's rows in plan order, in float64 rounded once.
     *
     * @param rows [N, C]
     * @return [T, C]
     */
    static INDArray sumByToken(INDArray rows, RoutingPlan plan, int tokens, Workers workers) {
        int width = (int) rows.size(1);
        INDArray out = Nd4j.createUninitialized(rows.dataType(), new long[] {tokens, width}, 'c');   // [T, C]
        if (out.length() > 0) {
            NativeElements rowsIn = rowsOf(rows);                                      // [N, C]
            NativeElements outRows = NativeElements.of(out);
            int[] rowsOfToken = rowsOfToken(plan, tokens);                             // [T·K]
            int k = plan.topK;
            workers.forRanges(tokens, minTokens(width), (from, to) -> {
                double[] acc = new double[width];                                      // da[t]
                double[] row = new double[width];                                      // one row of rows
                float[] scratch = new float[width];
                for (int t = from; t < to; t++) {
                    Arrays.fill(acc, 0.0);
                    for (int j = t * k; j < (t + 1) * k; j++) {
                        rowsIn.read((long) rowsOfToken[j] * width, row, width, scratch);
                        VectorRows.add(acc, 0, row, width);
                    }
                    outRows.write((long) t * width, acc, width, scratch);
                }
            });
        }
        return out;
    }

    /**
     * The reverse of gathering an expert's row to each of its plan rows ({@code rows = a[expertOfRow]}):
     * {@code da[e] = Σ rows[row]} over e's rows (offsets[e]..offsets[e+1]−1), zero for an expert without rows.
     *
     * @param rows    [N, C]
     * @param offsets [E + 1] the plan's
     * @return [E, C]
     */
    static INDArray sumByExpert(INDArray rows, int[] offsets) {
        int experts = offsets.length - 1;
        INDArray out = Nd4j.zeros(rows.dataType(), experts, rows.size(1));             // [E, C]
        for (int e = 0; e < experts; e++) {
            if (offsets[e] < offsets[e + 1]) {
                out.getRow(e).assign(rows.get(NDArrayIndex.interval(offsets[e], offsets[e + 1]), NDArrayIndex.all())
                        .sum(0));                                                       // [C]
            }
        }
        return out;
    }

    /** [N] the expert owning each plan row. */
    static int[] expertOfRow(RoutingPlan plan) {
        int[] out = new int[plan.rows()];
        for (int e = 0; e + 1 < plan.offsets.length; e++) {
            Arrays.fill(out, plan.offsets[e], plan.offsets[e + 1], e);
        }
        return out;
    }

    /** Rows (or tokens) per worker share below which a share is not worth a thread: about 32k elements. */
    static int minTokens(int hidden) {
        return Math.max(1, (1 << 15) / Math.max(1, hidden));
    }

    /**
     * [T·K] the plan rows of each token, ascending (the order the combine adds them in): token t's K rows are
     * entries t·K..(t+1)·K−1.
     */
    static int[] rowsOfToken(RoutingPlan plan, int tokens) {
        int k = plan.topK;
        int[] rowsOfToken = new int[plan.rows()];
        int[] filled = new int[tokens];
        for (int row = 0; row < plan.rows(); row++) {
            int t = plan.tokenOfRow[row];
            rowsOfToken[t * k + filled[t]++] = row;
        }
        return rowsOfToken;
    }

    /** Row-by-row access to an [N, D] array; an empty one (no routed rows) is never read or written. */
    static NativeElements rowsOf(INDArray a) {
        return a.length() == 0 ? null : NativeElements.of(a);
    }
}
