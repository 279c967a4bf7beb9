package org.sparkmoe.mumoe;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * A hierarchical TR layer with k product experts m = (m_1, ..., m_L) subtracted, exactly, as one TR layer of ranks
 * r_j·(1 + k): W'(n) = W(n) − Σ_m [n = m]·W(m), and [n = m]·W(m)(i, o) = trace(Π_l (δ_{n_l m_l}·A_Nl[:, m_l, :]) ·
 * A_I[:, i, :] · A_O[:, o, :]) is itself a ring with each level core's slices other than m_l zero. The trace of a
 * product of block-diagonal matrices is the sum of the blocks' traces, so the cores become block-diagonal:
 * <pre>
 *   A_Nl' = diag(A_Nl, A_Nl masked to slice m_l per muted m)   // [r_l·(1 + k), N_l, r_{l+1}·(1 + k)]
 *   A_I'  = diag(A_I, ..., A_I)                                 // [r_{L+1}·(1 + k), I, r_{L+2}·(1 + k)]
 *   A_O'  = diag(A_O, −A_O, ..., −A_O)                          // [r_{L+2}·(1 + k), O, r1·(1 + k)]
 * </pre>
 * The gates are shared. The layer's rank products grow by (1 + k)² (the chain Q_l by (1 + k)³, mostly zero blocks),
 * so this is for muting a few experts.
 */
final class TrMute {
    private TrMute() {
    }

    /** {@code params} of a hierarchical TR layer with the experts of {@code digits} [k][L] (m_1, ..., m_L) muted. */
    static Map<String, INDArray> muted(Map<String, INDArray> params, int[][] digits) {
        int k = digits.length;
        int levels = digits.length == 0 ? 0 : digits[0].length;
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>(params);
        for (int l = 0; l < levels; l++) {
            String name = TrWeights.expertName(l, levels);
            INDArray core = params.get(name);                                    // [r_l, N_l, r_{l+1}]
            INDArray[] blocks = new INDArray[1 + k];
            blocks[0] = core;
            for (int j = 0; j < k; j++) {
                int slice = digits[j][l];                                        // m_l
                blocks[1 + j] = Nd4j.zeros(core.dataType(), core.shape());
                blocks[1 + j].get(NDArrayIndex.all(), NDArrayIndex.point(slice), NDArrayIndex.all())
                        .assign(core.get(NDArrayIndex.all(), NDArrayIndex.point(slice), NDArrayIndex.all()));
            }
            out.put(name, blockDiagonal(blocks));
        }
        INDArray in = params.get("core.in");                                     // [r_{L+1}, I, r_{L+2}]
        INDArray o = params.get("core.out");                                     // [r_{L+2}, O, r1]
        INDArray[] ins = new INDArray[1 + k];
        INDArray[] outs = new INDArray[1 + k];
        ins[0] = in;
        outs[0] = o;
        for (int j = 0; j < k; j++) {
            ins[1 + j] = in;
            outs[1 + j] = o.neg();
        }
        out.put("core.in", blockDiagonal(ins));
        out.put("core.out", blockDiagonal(outs));
        return Collections.unmodifiableMap(out);
    }

    /** Cores [a_j, n, b_j] → [Σ a_j, n, Σ b_j] with core j at rows Σ_{<j} a, columns Σ_{<j} b, zero elsewhere. */
    private static INDArray blockDiagonal(INDArray[] blocks) {
        long rows = 0;
        long cols = 0;
        for (INDArray b : blocks) {
            rows += b.size(0);
            cols += b.size(2);
        }
        INDArray d = Nd4j.zeros(blocks[0].dataType(), rows, blocks[0].size(1), cols);
        long r = 0;
        long c = 0;
        for (INDArray b : blocks) {
            d.get(NDArrayIndex.interval(r, r + b.size(0)), NDArrayIndex.all(), NDArrayIndex.interval(c, c + b.size(2)))
                    .assign(b);
            r += b.size(0);
            c += b.size(2);
        }
        return d;
    }
}
