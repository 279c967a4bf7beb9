package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One matrix product per group of contiguous rows, each with its own weight matrix: for every group
 * g (an expert), {@code y[offsets[g]:offsets[g+1]] = x[offsets[g]:offsets[g+1]] · W_gᵀ}.
 * Groups are the row ranges of a routing plan; empty groups are skipped and no rows are copied.
 */
public interface GroupedGemm {

    /**
     * @param x       [N, in] rows sorted by group, 'c' order
     * @param w       [G, out, in] one weight per group, in Hugging Face's [out, in] Linear layout
     * @param offsets [G+1] group g owns rows offsets[g]..offsets[g+1]-1; offsets[G] = N
     * @param y       [N, out] 'c' order, overwritten
     */
    void forward(INDArray x, INDArray w, int[] offsets, INDArray y);
}
