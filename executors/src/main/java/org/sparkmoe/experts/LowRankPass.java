package org.sparkmoe.experts;

import org.nd4j.linalg.api.ndarray.INDArray;

/** What every low-rank forward pass keeps: the plan rows, y [T, D] and the bytes it allocated. */
abstract class LowRankPass implements ExpertFfn.Pass {
    final PlanRows rows;
    final INDArray y; // [T, D]
    final long bytes;

    LowRankPass(PlanRows rows, INDArray y, long bytes) {
        this.rows = rows;
        this.y = y;
        this.bytes = bytes;
    }

    @Override
    public INDArray out() {
        return y;
    }

    /** Bytes of every array this forward pass allocated (equals {@link LowRankExperts#forwardBytes} for its shapes). */
    public long allocatedBytes() {
        return bytes;
    }
}
