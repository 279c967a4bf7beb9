package org.sparkmoe.lora;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.moe.RoutingPlan;

/**
 * The routing of a shared-base MoLoRA FFN, dtype-generic: {@code logits [T,E] = x · gateᵀ}, softmax over E in
 * float64, top-K (ties to the lower expert index, as {@link org.sparkmoe.moe.Router}), optionally renormalised
 * (Mixtral). Holds the plan (pairs sorted by expert), the weights g and what the backward pass needs.
 * Immutable after {@link #route}.
 */
public final class SharedBaseRouting {
    /** Pairs p = token·K + slot sorted by expert; its float weights are not used (see {@link #weights}). */
    public final RoutingPlan plan;
    /** [K][T] plan row of token t, slot k (inverse of plan.perm). */
    final int[][] rowOfSlot;
    /** [T, E] softmax over all experts, row-major, float64. */
    private final double[] probs;
    /** [T·K] selected expert of pair p. */
    final int[] experts;
    /** [T·K] routing weight g of pair p, float64. */
    final double[] weights;
    /** [T·K, 1] g·scale per plan row, in the weights' data type. */
    final INDArray rowScale;
    final int tokens;
    final int numExperts;
    final int topK;
    final boolean normalizeTopK;

    private SharedBaseRouting(RoutingPlan plan, int[][] rowOfSlot, double[] probs, int[] experts, double[] weights,
            INDArray rowScale, int tokens, int numExperts, int topK, boolean normalizeTopK) {
        this.plan = plan;
        this.rowOfSlot = rowOfSlot;
        this.probs = probs;
        this.experts = experts;
        this.weights = weights;
        this.rowScale = rowScale;
        this.tokens = tokens;
        this.numExperts = numExperts;
        this.topK = topK;
        this.normalizeTopK = normalizeTopK;
    }

    /** Bytes {@link #route} allocates: logits and row scales in the data type, metadata on the heap. */
    static long bytes(long t, long e, long k, DataType dt) {
        long tk = t * k;
        long width = dt.width();
        return width * (t * e + tk)  // logits [T,E], rowScale [T·K,1]
                + 8 * t * e          // probs double [T·E]
                + 8 * tk * 2         // weights, g·s per row: double [T·K]
                + 4 * tk * 3         // experts, rowOfSlot, float weights handed to the plan
                + 4 * tk * 3         // plan: perm, tokenOfRow, weightOfRow
                + 4 * (e + 1);       // plan: offsets
    }

    /** Routes x [T, D] with gate [E, D]; the scale s is folded into {@link #rowScale}. */
    static SharedBaseRouting route(INDArray x, INDArray gate, int topK, boolean normalizeTopK, double scale,
            SharedBaseScratch scratch) {
        int t = (int) x.size(0);
        int e = (int) gate.size(0);
        DataType dt = x.dataType();
        INDArray logits = scratch.alloc(dt, t, e);                                  // [T, E]
        Nd4j.gemm(x, gate, logits, false, true, 1.0, 0.0);                          // x · gateᵀ
        double[] probs = logits.data().asDouble();                                  // [T·E], softmax in place
        int[] experts = new int[t * topK];
        double[] weights = new double[t * topK];
        float[] planWeights = new float[t * topK];
        for (int tok = 0; tok < t; tok++) {
            softmaxInPlace(probs, tok * e, e);
            selectTopK(probs, tok * e, e, topK, experts, weights, tok * topK);
            if (normalizeTopK) {
                double sum = 0;
                for (int j = 0; j < topK; j++) {
                    sum += weights[tok * topK + j];
                }
                for (int j = 0; j < topK; j++) {
                    weights[tok * topK + j] /= sum;
                }
            }
        }
        for (int p = 0; p < planWeights.length; p++) {
            planWeights[p] = (float) weights[p];
        }
        RoutingPlan plan = RoutingPlan.build(experts, planWeights, e, topK);
        int[][] rowOfSlot = new int[topK][t];
        double[] scaleOfRow = new double[plan.rows()];
        for (int row = 0; row < plan.rows(); row++) {
            int pair = plan.perm[row];
            rowOfSlot[pair % topK][pair / topK] = row;
            scaleOfRow[row] = weights[pair] * scale;
        }
        INDArray rowScale = scratch.count(Nd4j.create(scaleOfRow, new long[] {plan.rows(), 1}, dt)); // [T·K, 1] g·s
        scratch.countHeap(probs.length * 8L + weights.length * 8L + scaleOfRow.length * 8L
                + 4L * (experts.length + (long) topK * t + planWeights.length)
                + 4L * (plan.perm.length + plan.tokenOfRow.length + plan.weightOfRow.length + plan.offsets.length));
        return new SharedBaseRouting(plan, rowOfSlot, probs, experts, weights, rowScale, t, e, topK,
                normalizeTopK);
    }

    private static void softmaxInPlace(double[] z, int at, int n) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, z[at + i]);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) {
            z[at + i] = Math.exp(z[at + i] - max);
            sum += z[at + i];
        }
        for (int i = 0; i < n; i++) {
            z[at + i] /= sum;
        }
    }

    /** The K largest of probs[at..at+n) in descending order, ties to the lower index. */
    private static void selectTopK(double[] probs, int at, int n, int topK, int[] experts, double[] weights,
            int out) {
        for (int j = 0; j < topK; j++) {
            int best = -1;
            for (int e = 0; e < n; e++) {
                boolean taken = false;
                for (int q = 0; q < j; q++) {
                    taken |= experts[out + q] == e;
                }
                if (!taken && (best < 0 || probs[at + e] > probs[at + best])) {
                    best = e;
                }
            }
            experts[out + j] = best;
            weights[out + j] = probs[at + best];
        }
    }

    /** Selected expert of token t, slot k. */
    public int expert(int t, int k) {
        return experts[t * topK + k];
    }

    /** Routing weight g of token t, slot k (float64). */
    public double weight(int t, int k) {
        return weights[t * topK + k];
    }

    /**
     * Backward of {@link #route} with the selection held constant: from dL/dg per plan row to
     * {@code dlogits [T, E]}. Renormalised: g = softmax over the selected logits, so
     * {@code dz_{e_k} = g_k (c_k − Σ_j g_j c_j)}; otherwise g_k = p_{e_k} and
     * {@code dz_i = p_i (c̃_i − Σ_k p_{e_k} c_k)} with c̃ zero off the selection.
     *
     * @param dWeightOfRow [T·K, 1] dL/dg in plan order
     * @return dlogits [T, E] in the data type of dWeightOfRow
     */
    INDArray backward(INDArray dWeightOfRow) {
        double[] byRow = dWeightOfRow.dup('c').data().asDouble();
        double[] c = new double[byRow.length];                                       // [T·K] pair order
        for (int row = 0; row < byRow.length; row++) {
            c[plan.perm[row]] = byRow[row];
        }
        double[] dz = new double[tokens * numExperts];
        for (int t = 0; t < tokens; t++) {
            int at = t * topK;
            double mean = 0;
            for (int k = 0; k < topK; k++) {
                mean += weights[at + k] * c[at + k];                                 // Σ g_k c_k (g_k = p_{e_k} unnormalised)
            }
            if (normalizeTopK) {
                for (int k = 0; k < topK; k++) {
                    dz[t * numExperts + experts[at + k]] = weights[at + k] * (c[at + k] - mean);
                }
            } else {
                for (int e = 0; e < numExperts; e++) {
                    dz[t * numExperts + e] = -probs[t * numExperts + e] * mean;
                }
                for (int k = 0; k < topK; k++) {
                    dz[t * numExperts + experts[at + k]] += weights[at + k] * c[at + k];
                }
            }
        }
        return Nd4j.create(dz, new long[] {tokens, numExperts}, DataType.DOUBLE).castTo(dWeightOfRow.dataType());
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
    INDArray gather(INDArray in, SharedBaseScratch scratch) {
        INDArray out = scratch.alloc(in.dataType(), plan.rows(), in.size(1));
        Nd4j.pullRows(in, out, 1, plan.tokenOfRow);
        return out;
    }
}
