package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/** {@link GroupedGemm} as one BLAS sgemm per non-empty group on row-range views (no copies). */
public final class Nd4jGroupedGemm implements GroupedGemm {

    @Override
    public void forward(INDArray x, INDArray w, int[] offsets, INDArray y) {
        int groups = offsets.length - 1;
        if (w.size(0) != groups || x.size(1) != w.size(2) || y.size(1) != w.size(1) || x.size(0) != y.size(0)
                || offsets[groups] != x.size(0)) {
            throw new IllegalArgumentException("grouped gemm shapes disagree: x " + x.shapeInfoToString()
                    + ", w " + w.shapeInfoToString() + ", y " + y.shapeInfoToString() + ", groups " + groups
                    + " ending at row " + offsets[groups]);
        }
        for (int g = 0; g < groups; g++) {
            if ((g == 0 && offsets[0] != 0) || offsets[g + 1] < offsets[g]) {
                throw new IllegalArgumentException("grouped gemm offsets must start at 0 and not decrease, got "
                        + java.util.Arrays.toString(offsets));
            }
        }
        for (int g = 0; g < groups; g++) {
            int begin = offsets[g];
            int end = offsets[g + 1];
            if (begin == end) {
                continue;
            }
            INDArray xg = x.get(NDArrayIndex.interval(begin, end), NDArrayIndex.all()); // [n_g, in]
            INDArray yg = y.get(NDArrayIndex.interval(begin, end), NDArrayIndex.all()); // [n_g, out]
            Nd4j.gemm(xg, w.slice(g), yg, false, true, 1.0, 0.0);                      // x_g · W_gᵀ
        }
    }
}
