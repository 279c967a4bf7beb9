package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The reference {@link GroupedGemm}: the per-expert loop with gathers that PEFT and transformers run
 * ({@code current_state = hidden_states[top_x]}, {@code expert(current_state)},
 * {@code final.index_add_(0, top_x, out)}). Per non-empty group it copies the group's rows into a fresh array,
 * multiplies into a fresh result, and copies the result back into the group's rows. Correct and simple; every
 * group pays two copies and two allocations on top of its product. Its products use the BLAS threads; the
 * element-wise work between them runs on {@link #workers()} (serial unless given).
 */
public final class LoopGroupedGemm implements GroupedGemm {
    private final Workers elementWise;

    public LoopGroupedGemm() {
        this(Workers.SERIAL);
    }

    /** @param elementWise the threads for the row-parallel element-wise work between the products */
    public LoopGroupedGemm(Workers elementWise) {
        this.elementWise = elementWise;
    }

    @Override
    public Workers workers() {
        return elementWise;
    }

    @Override
    public void forward(INDArray x, WeightStack w, int[] offsets, INDArray y, boolean accumulate) {
        GroupedShapes.check("forward", x, w, y, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            if (offsets[g] < offsets[g + 1]) {
                INDArray xg = gather(x, offsets, g);                                  // [n_g, in]
                INDArray yg = Nd4j.gemm(xg, w.widened(g, x.dataType()), false, true);                 // [n_g, out] = x_g · W_gᵀ
                scatter(yg, y, offsets, g, accumulate);
                NativeBuffers.free(xg, yg);
            }
        }
    }

    @Override
    public void backwardInput(INDArray dy, WeightStack w, int[] offsets, INDArray dx, boolean accumulate) {
        GroupedShapes.check("backwardInput", dx, w, dy, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            if (offsets[g] < offsets[g + 1]) {
                INDArray dyg = gather(dy, offsets, g);                                // [n_g, out]
                INDArray dxg = Nd4j.gemm(dyg, w.widened(g, dy.dataType()), false, false);              // [n_g, in] = dy_g · W_g
                scatter(dxg, dx, offsets, g, accumulate);
                NativeBuffers.free(dyg, dxg);
            }
        }
    }

    @Override
    public void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate) {
        GroupedShapes.checkGradient("backwardWeight", x, dw, dy, offsets);
        for (int g = 0; g < offsets.length - 1; g++) {
            INDArray dwg = dw.slice(g);                                               // [out, in]
            if (offsets[g] < offsets[g + 1]) {
                INDArray dyg = gather(dy, offsets, g);                                // [n_g, out]
                INDArray xg = gather(x, offsets, g);                                  // [n_g, in]
                INDArray grad = Nd4j.gemm(dyg, xg, true, false);                      // [out, in] = dy_gᵀ · x_g
                if (accumulate) {
                    dwg.addi(grad);
                } else {
                    dwg.assign(grad);
                }
                NativeBuffers.free(dyg, xg, grad);
            } else if (!accumulate) {
                dwg.assign(0);
            }
        }
    }

    /** A fresh 'c'-order copy of rows offsets[g]..offsets[g+1]-1. */
    private static INDArray gather(INDArray a, int[] offsets, int g) {
        return a.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all()).dup('c');
    }

    /** Writes (or adds) a group's result back into its rows of {@code into}. */
    private static void scatter(INDArray part, INDArray into, int[] offsets, int g, boolean accumulate) {
        INDArray rows = into.get(NDArrayIndex.interval(offsets[g], offsets[g + 1]), NDArrayIndex.all());
        if (accumulate) {
            rows.addi(part);
        } else {
            rows.assign(part);
        }
    }
}
