package org.sparkmoe.kernels;

import org.sparkmoe.cuda.CudaLibrary;
import org.sparkmoe.cuda.TaskGpu;

/**
 * Where the routed experts of a loaded model run: {@link #CPU} (ND4J, the default) or {@link #CUDA} (the fused bf16
 * expert layer, {@code experts.DeviceExperts}, where the experts fit it, else {@link CudaGroupedGemm}). The driver
 * resolves it once and every job plan carries it to the executors, which pass it to {@code ModelFolder}; nothing in
 * this JVM is set globally.
 */
public enum Device {
    CPU, CUDA;

    /** The environment variable a machine (the GPU container image) may set as the driver's default device. */
    public static final String ENVIRONMENT = "SPARKMOE_DEVICE";

    /** The device named by {@code name} (cpu or cuda, any case). */
    public static Device parse(String name) {
        for (Device d : values()) {
            if (d.name().equalsIgnoreCase(name.trim())) {
                return d;
            }
        }
        throw new IllegalArgumentException("unknown device '" + name + "', expected cpu or cuda");
    }

    /**
     * Checks that this device can be used here: for CUDA loads the CUDA library and looks for a GPU, throwing
     * {@link org.sparkmoe.cuda.CudaUnavailableException} (one line) when there is none; the driver calls it first,
     * for a clear early error.
     */
    public Device requireAvailable() {
        if (this == CUDA) {
            CudaLibrary.load();
        }
        return this;
    }

    /** cpu or cuda, as the flag spells it. */
    public String flagValue() {
        return name().toLowerCase(java.util.Locale.ROOT);
    }

    /**
     * What a per-JVM model cache tells this device's copies apart by: cpu, or cuda:N for the GPU of the task on this
     * thread ({@link TaskGpu}), since an executor with several GPUs keeps a model per GPU.
     */
    public String cacheTag() {
        return this == CUDA ? "cuda:" + TaskGpu.ordinal() : flagValue();
    }

    /** A new grouped GEMM for this device: with CUDA, on the GPU of the task on this thread. */
    public GroupedGemm groupedGemm() {
        return this == CUDA ? new CudaGroupedGemm() : new Nd4jGroupedGemm();
    }
}
