package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/** {@link GroupedGemm} as one BLAS gemm per non-empty group on row-range views (no copies). */
public final class Nd4jGroupedGemm implements GroupedGemm {

    @Override
    public void forward(INDArray x, INDArray w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            if (offsets[g] < offsets[g + 1]) {
                Nd4j.gemm(rows(x, offsets, g), w.slice(g), rows(y, offsets, g), false, true, 1.0,
                        accumulate ? 1.0 : 0.0);                                      // x_g · W_gᵀ
            }
        }
    }

    @Override
    public void backwardInput(INDArray dy, INDArray w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            if (offsets[g] < offsets[g + 1]) {
                Nd4j.gemm(rows(dy, offsets, g), w.slice(g), rows(dx, offsets, g), false, false, 1.0,
                        accumulate ? 1.0 : 0.0);                                      // dy_g · W_g
            }
        }
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.check("backwardWeight", x, dw, dy, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            INDArray dwg = dw.slice(g);                                               // [out, in]
            if (offsets[g] < offsets[g + 1]) {
                Nd4j.gemm(rows(dy, offsets, g), rows(x, offsets, g), dwg, true, false, 1.0,
                        accumulate ? 1.0 : 0.0);                                      // dy_gᵀ · x_g
            } else if (!accumulate) {
                dwg.assign(0);
            }
        }
    }

    /** Rows offsets[g]..offsets[g+1]-1 of a [N, ·] array, as a view. */
    private static INDArray rows(INDArray a, int[] offsets, int g) {
        return a.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all());
    }
}
