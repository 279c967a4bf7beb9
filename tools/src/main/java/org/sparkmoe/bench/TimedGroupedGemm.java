package org.sparkmoe.bench;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.kernels.Workers;

import java.util.concurrent.atomic.AtomicLong;

/** A {@link GroupedGemm} that adds the wall time of every call to a counter, to split a pass into GEMM and the rest. */
final class TimedGroupedGemm implements GroupedGemm {
    private final GroupedGemm inner;
    final AtomicLong nanos = new AtomicLong();

    TimedGroupedGemm(GroupedGemm inner) {
        this.inner = inner;
    }

    @Override
    public void forward(INDArray x, WeightStack w, int[] offsets, INDArray y, boolean accumulate) {
        long t0 = System.nanoTime();
        inner.forward(x, w, offsets, y, accumulate);
        nanos.addAndGet(System.nanoTime() - t0);
    }

    @Override
    public void backwardInput(INDArray dy, WeightStack w, int[] offsets, INDArray dx, boolean accumulate) {
        long t0 = System.nanoTime();
        inner.backwardInput(dy, w, offsets, dx, accumulate);
        nanos.addAndGet(System.nanoTime() - t0);
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        long t0 = System.nanoTime();
        inner.backwardWeight(dy, x, offsets, dw, accumulate);
        nanos.addAndGet(System.nanoTime() - t0);
    }

    @Override
    public Workers workers() {
        return inner.workers();
    }
}
