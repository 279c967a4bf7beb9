package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Frees the native buffers of a pass's temporaries as soon as the pass is done with them. ND4J frees an array's
 * buffer only when the garbage collector collects the array; kernels that leave no garbage on the heap make
 * collections rare, and the per-pass arrays ([N, I] and the like) then pile up as fresh pages the operating system
 * has to zero: the grouped pass of `bench moe` fine-grained went from about 180 to 620–830 ms, mostly in allocation
 * and system time, when the e^x kernel stopped boxing its vectors (docs/benchmarks.md, "e^x in a pass of its own").
 */
public final class NativeBuffers {
    private NativeBuffers() {
    }

    /** Closes each array that owns its buffer (not views, not workspace arrays); nulls are skipped. */
    public static void free(INDArray... arrays) {
        for (INDArray a : arrays) {
            if (a != null && a.closeable()) {
                a.close();
            }
        }
    }
}
