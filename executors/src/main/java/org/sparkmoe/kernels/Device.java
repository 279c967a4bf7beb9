package org.sparkmoe.kernels;

import org.sparkmoe.cuda.CudaLibrary;

import java.util.Locale;

/**
 * Where the expert grouped GEMMs of models loaded by {@code ModelFolder} run in this JVM: {@link #CPU} (ND4J,
 * the default) or {@link #CUDA} ({@link CudaGroupedGemm}). Chosen by the system property {@value #PROPERTY}
 * ({@code cpu|cuda}), which {@link #use} sets; executors in other JVMs read it from their own JVM options.
 */
public enum Device {
    CPU, CUDA;

    public static final String PROPERTY = "sparkmoe.device";

    /** The device named by {@code name} (cpu or cuda, any case). */
    public static Device parse(String name) {
        for (Device d : values()) {
            if (d.name().equalsIgnoreCase(name.trim())) {
                return d;
            }
        }
        throw new IllegalArgumentException("unknown device '" + name + "', expected cpu or cuda");
    }

    /** This JVM's device: the system property, cpu when unset. */
    public static Device current() {
        return parse(System.getProperty(PROPERTY, "cpu"));
    }

    /**
     * Makes {@code d} this JVM's device; for CUDA first loads the CUDA library and checks for a GPU, throwing
     * {@link org.sparkmoe.cuda.CudaUnavailableException} (one line) when there is none.
     */
    public static void use(Device d) {
        if (d == CUDA) {
            CudaLibrary.load();
        }
        System.setProperty(PROPERTY, d.name().toLowerCase(Locale.ROOT));
    }

    /** A new grouped GEMM for this device. */
    public GroupedGemm groupedGemm() {
        return this == CUDA ? new CudaGroupedGemm() : new Nd4jGroupedGemm();
    }
}
