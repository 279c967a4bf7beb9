package org.sparkmoe.kernels;

import org.sparkmoe.cuda.CudaLibrary;

import java.util.Locale;

/**
 * Where the expert grouped GEMMs of models loaded by {@code ModelFolder} run in this JVM: {@link #CPU} (ND4J,
 * the default) or {@link #CUDA} ({@link CudaGroupedGemm}). Chosen by the system property {@value #PROPERTY}
 * ({@code cpu|cuda}), which {@link #use} sets, else by the environment variable {@value #ENVIRONMENT}, which the
 * driver passes to its executors (spark.executorEnv).
 */
public enum Device {
    CPU, CUDA;

    public static final String PROPERTY = "sparkmoe.device";
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

    /** This JVM's device: the system property, else the environment variable, cpu when neither is set. */
    public static Device current() {
        String env = System.getenv(ENVIRONMENT);
        return parse(System.getProperty(PROPERTY, env == null || env.isBlank() ? "cpu" : env));
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
