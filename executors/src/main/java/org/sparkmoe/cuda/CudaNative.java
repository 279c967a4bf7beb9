package org.sparkmoe.cuda;

import java.nio.ByteBuffer;

/**
 * The JNI entry points of {@code libsparkmoe_cuda.so} (sources in {@code executors/src/main/cuda}). Device
 * pointers are {@code long}s, host data direct {@link ByteBuffer}s; a failing call throws {@link CudaException}.
 * Call {@link CudaLibrary#load()} first. Data types: {@link #F32}, {@link #BF16}.
 */
final class CudaNative {
    static final int F32 = 0;
    static final int BF16 = 1;

    private CudaNative() {
    }

    /** @return the number of CUDA devices, or minus the CUDA error (no driver, no device) */
    static native int deviceCount();

    static native String errorString(int error);

    static native String deviceName(int ordinal);

    /** Makes {@code ordinal} the calling thread's current device: its later calls allocate and launch there. */
    static native void setDevice(int ordinal);

    static native int currentDevice();

    static native long malloc(long bytes);

    static native void free(long ptr);

    static native void copyToDevice(long dst, ByteBuffer src, long bytes);

    static native void copyToHost(ByteBuffer dst, long src, long bytes);

    static native void synchronize();

    static native void fillUniform(long ptr, long n, int dtype, long seed, float lo, float hi);

    static native void gemmForwardF32(long x, long w, long y, long offsets, int groups, int rows, int out, int in,
                                      boolean accumulate);

    static native void gemmBackwardInputF32(long dy, long w, long dx, long offsets, int groups, int rows, int out,
                                            int in, boolean accumulate);

    static native void gemmBackwardWeightF32(long dy, long x, long dw, long offsets, int groups, int rows, int out,
                                             int in, boolean accumulate);

    static native long layerCreate(int dtype, int experts, int hidden, int intermediate, int rank, float scale);

    static native void layerDestroy(long layer);

    static native void layerSetBase(long layer, long w1, long w3, long w2);

    static native void layerSetLora(long layer, long a1, long b1, long a3, long b3, long a2, long b2);

    static native void layerForward(long layer, int tokens, int topK, int rows, long offsets, long tokenOfRow,
                                    long weightOfRow, long rowOfPair, long x, long out);

    static native void layerBackward(long layer, long dOut, long dx, long dA1, long dB1, long dA3, long dB3, long dA2,
                                     long dB2, long dGates);

    /** @param pointers offsets, tokenOfRow, weightOfRow, rowOfPair, x, out, dOut, dx, dA1, dB1, dA3, dB3, dA2, dB2, dGates */
    static native float layerTime(long layer, int tokens, int topK, int rows, long[] pointers, int warmup, int iters);
}
