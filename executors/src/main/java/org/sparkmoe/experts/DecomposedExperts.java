package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.Workers;

/**
 * The E SwiGLU experts of one MoE layer held as a decomposition of each projection's stacked weights [E, out, in]
 * ({@link CpExperts}, {@link TrExperts}): what they share beside their algebra — E, D, the data type, the GEMM's
 * threads, and the checks of the forward's input and the backward's pass and dOut.
 */
abstract class DecomposedExperts implements ExpertFfn {
    private final String name;      // as messages name the experts: "CP experts'"
    private final int experts;      // E
    private final int hidden;       // D
    private final DataType dataType;
    final Workers workers;          // the GEMM's threads, for the SwiGLU and the combine

    DecomposedExperts(String name, int experts, long hidden, DataType dataType, GroupedGemm gemm) {
        this.name = name;
        this.experts = experts;
        this.hidden = (int) hidden;
        this.dataType = dataType;
        this.workers = gemm.workers();
    }

    @Override
    public final int experts() {
        return experts;
    }

    @Override
    public final int hidden() {
        return hidden;
    }

    @Override
    public final DataType dataType() {
        return dataType;
    }

    /** x must be [T, D] in the experts' type. */
    final void checkInput(INDArray x) {
        if (x.rank() != 2 || x.size(1) != hidden() || x.dataType() != dataType()) {
            throw new IllegalArgumentException(name + " input must be [T, " + hidden() + "] " + dataType()
                    + ", got " + Arrays.toString(x.shape()) + " " + x.dataType());
        }
    }

    /** {@code pass} as the pass of this kind's forward, {@code type}, or a refusal naming what it is. */
    final <P extends Pass> P passOf(Pass pass, Class<P> type) {
        if (!type.isInstance(pass)) {
            throw new IllegalArgumentException(name + " backward needs a pass from their forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        return type.cast(pass);
    }

    /** dOut must be [T, D] in the experts' type, T the forward's tokens. */
    final void checkDOut(INDArray dOut, int tokens) {
        if (dOut.rank() != 2 || dOut.size(0) != tokens || dOut.size(1) != hidden() || dOut.dataType() != dataType()) {
            throw new IllegalArgumentException("dOut must be [" + tokens + ", " + hidden() + "] " + dataType()
                    + " (T, D), got " + Arrays.toString(dOut.shape()) + " " + dOut.dataType());
        }
    }
}
