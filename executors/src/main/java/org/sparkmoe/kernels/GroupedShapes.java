package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;

import java.util.Arrays;

/** Argument checks shared by every {@link GroupedGemm}: one message naming the shapes that disagree. */
final class GroupedShapes {
    private GroupedShapes() {
    }

    /** rows [N, in] · W_gᵀ → cols [N, out] with w [G, out, in]; offsets [G+1] from 0 to N, non-decreasing. */
    static void check(String op, INDArray rowsIn, INDArray w, INDArray rowsOut, int[] offsets) {
        int groups = offsets.length - 1;
        boolean shapesAgree = w.rank() == 3 && rowsIn.rank() == 2 && rowsOut.rank() == 2
                && w.size(0) == groups && rowsIn.size(1) == w.size(2) && rowsOut.size(1) == w.size(1)
                && rowsIn.size(0) == rowsOut.size(0) && offsets[groups] == rowsIn.size(0);
        if (!shapesAgree) {
            throw new IllegalArgumentException("grouped gemm " + op + " shapes disagree: rows "
                    + Arrays.toString(rowsIn.shape()) + ", w " + Arrays.toString(w.shape()) + ", result rows "
                    + Arrays.toString(rowsOut.shape()) + ", groups " + groups + " ending at row " + offsets[groups]);
        }
        if (rowsIn.dataType() != w.dataType() || rowsOut.dataType() != w.dataType()) {
            throw new IllegalArgumentException("grouped gemm " + op + " mixes data types: " + rowsIn.dataType()
                    + ", " + w.dataType() + ", " + rowsOut.dataType());
        }
        for (int g = 0; g < groups; g++) {
            if ((g == 0 && offsets[0] != 0) || offsets[g + 1] < offsets[g]) {
                throw new IllegalArgumentException("grouped gemm offsets must start at 0 and not decrease, got "
                        + Arrays.toString(offsets));
            }
        }
    }
}
