package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;

/** Argument checks shared by every {@link GroupedGemm}: one message naming the shapes that disagree. */
final class GroupedShapes {
    private GroupedShapes() {
    }

    /**
     * rows [N, in] · W_gᵀ → cols [N, out] with w [G, out, in]; offsets [G+1] from 0 to N, non-decreasing. The rows are
     * FLOAT or DOUBLE, both of one type; the weights are of that type or stored narrower ({@link WeightStack}).
     */
    static void check(String op, INDArray rowsIn, WeightStack w, INDArray rowsOut, int[] offsets) {
        int groups = offsets.length - 1;
        boolean shapesAgree = rowsIn.rank() == 2 && rowsOut.rank() == 2
                && w.groups() == groups && rowsIn.size(1) == w.cols() && rowsOut.size(1) == w.rows()
                && rowsIn.size(0) == rowsOut.size(0) && offsets[groups] == rowsIn.size(0);
        if (!shapesAgree) {
            throw new IllegalArgumentException("grouped gemm " + op + " shapes disagree: rows "
                    + Arrays.toString(rowsIn.shape()) + ", w " + Arrays.toString(w.shape()) + ", result rows "
                    + Arrays.toString(rowsOut.shape()) + ", groups " + groups + " ending at row " + offsets[groups]);
        }
        DataType type = rowsIn.dataType();
        if ((type != DataType.FLOAT && type != DataType.DOUBLE) || rowsOut.dataType() != type
                || (w.dataType() == DataType.DOUBLE && type != DataType.DOUBLE)) {
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

    /** As above for a weight gradient {@code dw} [G, out, in], which must be of the rows' type. */
    static void checkGradient(String op, INDArray rowsIn, INDArray dw, INDArray rowsOut, int[] offsets) {
        if (dw.rank() != 3) {
            throw new IllegalArgumentException("grouped gemm " + op + " needs a [G, out, in] gradient, got "
                    + Arrays.toString(dw.shape()));
        }
        check(op, rowsIn, WeightStack.of(dw), rowsOut, offsets);
        if (dw.dataType() != rowsIn.dataType()) {
            throw new IllegalArgumentException("grouped gemm " + op + " mixes data types: " + rowsIn.dataType()
                    + ", " + dw.dataType() + ", " + rowsOut.dataType());
        }
    }
}
