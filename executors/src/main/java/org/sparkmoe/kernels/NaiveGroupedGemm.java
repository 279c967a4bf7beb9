package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The naive dense {@link GroupedGemm}: every group's weight is applied to all N rows (one dense product per
 * group), and only the group's own rows of that product are kept. G times the FLOPs and a full [N, ·] temporary
 * per group; no routing logic to get wrong, which is what makes it a reference. For the weight gradient the
 * rows of other groups are masked to zero before the dense product {@code dW_g = (mask_g ⊙ dy)ᵀ · x}.
 */
public final class NaiveGroupedGemm implements GroupedGemm {

    @Override
    public void forward(INDArray x, WeightStack w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        for (int g = 0; g < offsets.length - 1 && x.size(0) > 0; g++) {
            INDArray all = Nd4j.gemm(x, w.widened(g, x.dataType()), false, true);                     // [N, out] = x · W_gᵀ
            keepRows(all, y, offsets, g, accumulate);
        }
    }

    @Override
    public void backwardInput(INDArray dy, WeightStack w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        for (int g = 0; g < offsets.length - 1 && dy.size(0) > 0; g++) {
            INDArray all = Nd4j.gemm(dy, w.widened(g, dy.dataType()), false, false);                   // [N, in] = dy · W_g
            keepRows(all, dx, offsets, g, accumulate);
        }
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.checkGradient("backwardWeight", x, dw, dy, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            INDArray dwg = dw.slice(g);                                               // [out, in]
            if (dy.size(0) == 0) {
                if (!accumulate) {
                    dwg.assign(0);
                }
                continue;
            }
            INDArray masked = dy.dup('c');                                            // [N, out]
            zeroRowsOutside(masked, offsets, g);
            INDArray grad = Nd4j.gemm(masked, x, true, false);                        // [out, in] = (mask ⊙ dy)ᵀ · x
            if (accumulate) {
                dwg.addi(grad);
            } else {
                dwg.assign(grad);
            }
        }
    }

    /** Copies (or adds) rows offsets[g]..offsets[g+1]-1 of the dense product into the same rows of {@code into}. */
    private static void keepRows(INDArray all, INDArray into, int[] offsets, int g, boolean accumulate) {
        if (offsets[g] == offsets[g + 1]) {
            return;
        }
        INDArray src = all.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all());
        INDArray dst = into.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all());
        if (accumulate) {
            dst.addi(src);
        } else {
            dst.assign(src);
        }
    }

    private static void zeroRowsOutside(INDArray a, int[] offsets, int g) {
        long n = a.size(0);
        if (offsets[g] > 0) {
            a.get(NDArrayIndex.interval(0, offsets[g]), NDArrayIndex.all()).assign(0);
        }
        if (offsets[g + 1] < n) {
            a.get(NDArrayIndex.interval(offsets[g + 1], n), NDArrayIndex.all()).assign(0);
        }
    }
}
