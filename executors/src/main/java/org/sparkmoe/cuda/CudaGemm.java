package org.sparkmoe.cuda;

/**
 * The grouped GEMM on float32 device arrays (the SIMT kernel), with the semantics of Java's {@code GroupedGemm}:
 * group g owns rows offsets[g]..offsets[g+1]-1, weights are [G, out, in]; any sizes. offsets live on the device.
 */
public final class CudaGemm {
    private CudaGemm() {
    }

    /** y[N, out] (+)= x[N, in] · W_gᵀ. */
    public static void forward(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, DeviceBuffer offsets, int groups,
                               int rows, int out, int in, boolean accumulate) {
        CudaNative.gemmForwardF32(x.pointer(), w.pointer(), y.pointer(), offsets.pointer(), groups, rows, out, in,
                accumulate);
    }

    /** dx[N, in] (+)= dy[N, out] · W_g. */
    public static void backwardInput(DeviceBuffer dy, DeviceBuffer w, DeviceBuffer dx, DeviceBuffer offsets,
                                     int groups, int rows, int out, int in, boolean accumulate) {
        CudaNative.gemmBackwardInputF32(dy.pointer(), w.pointer(), dx.pointer(), offsets.pointer(), groups, rows, out,
                in, accumulate);
    }

    /** dW[G, out, in] (+)= dy_gᵀ · x_g; an empty group's dW_g is zero (or unchanged when accumulating). */
    public static void backwardWeight(DeviceBuffer dy, DeviceBuffer x, DeviceBuffer dw, DeviceBuffer offsets,
                                      int groups, int rows, int out, int in, boolean accumulate) {
        CudaNative.gemmBackwardWeightF32(dy.pointer(), x.pointer(), dw.pointer(), offsets.pointer(), groups, rows, out,
                in, accumulate);
    }

    public static void synchronize() {
        CudaNative.synchronize();
    }
}
