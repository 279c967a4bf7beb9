package org.sparkmoe.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;

/**
 * Loads {@code libsparkmoe_cuda.so} on first use only: from the system property {@code sparkmoe.cuda.library}
 * when set, else from the class-path resource {@value #RESOURCE} (built by {@code mvn -Pcuda-kernels}), extracted
 * to a temporary file. CPU runs never call this. Every failure is a {@link CudaUnavailableException} with a
 * one-line reason, remembered so later calls fail the same way.
 */
public final class CudaLibrary {
    public static final String RESOURCE = "/native/linux-x86_64/libsparkmoe_cuda.so";
    public static final String PROPERTY = "sparkmoe.cuda.library";

    private static String device;            // device 0's name, once loaded
    private static int deviceCount;
    private static CudaUnavailableException failure;

    private CudaLibrary() {
    }

    /**
     * Makes CUDA device {@code ordinal} the calling thread's current device (CUDA keeps it per host thread), loading
     * the library first; a device this process cannot see is a {@link CudaUnavailableException} naming it.
     */
    public static void useDevice(int ordinal) {
        load();
        if (ordinal >= deviceCount) {
            String visible = System.getenv("CUDA_VISIBLE_DEVICES");
            throw new CudaUnavailableException("--device cuda: this task was given GPU " + ordinal
                    + " but this process sees " + deviceCount + " CUDA device" + (deviceCount == 1 ? "" : "s")
                    + (visible == null ? "" : " (CUDA_VISIBLE_DEVICES=" + visible + ")"));
        }
        CudaNative.setDevice(ordinal);
    }

    /** Loads the library and checks there is a GPU; returns the name of device 0. */
    public static synchronized String load() {
        if (device != null) {
            return device;
        }
        if (failure != null) {
            throw failure;
        }
        try {
            device = loadOnce(System.getProperty(PROPERTY));
            return device;
        } catch (CudaUnavailableException e) {
            failure = e;
            throw e;
        }
    }

    /** One attempt, not remembered: {@code override} is a library file to load instead of the resource, or null. */
    static String loadOnce(String override) {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "");
        if (override == null && !(os.startsWith("linux") && (arch.equals("amd64") || arch.equals("x86_64")))) {
            throw new CudaUnavailableException("--device cuda: the CUDA kernels are built for linux-x86_64 only, this is "
                    + os + "-" + arch);
        }
        Path file = override != null ? Path.of(override) : extract();
        try {
            System.load(file.toAbsolutePath().toString());
        } catch (UnsatisfiedLinkError e) {
            throw new CudaUnavailableException("--device cuda: cannot load " + file + ": " + firstLine(e.getMessage()));
        }
        int count = CudaNative.deviceCount();
        deviceCount = Math.max(count, 0);
        if (count < 0) {
            throw new CudaUnavailableException("--device cuda: no usable CUDA driver or GPU (" + CudaNative.errorString(-count)
                    + ")");
        }
        if (count == 0) {
            throw new CudaUnavailableException("--device cuda: no CUDA GPU found");
        }
        return CudaNative.deviceName(0);
    }

    private static Path extract() {
        try (InputStream in = CudaLibrary.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new CudaUnavailableException("--device cuda: this build has no CUDA kernels (" + RESOURCE
                        + " is missing; build with mvn -Pcuda-kernels on a machine with nvcc)");
            }
            Path file = Files.createTempFile("libsparkmoe_cuda", ".so");
            file.toFile().deleteOnExit();
            Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
            return file;
        } catch (IOException e) {
            throw new CudaUnavailableException("--device cuda: cannot extract the CUDA library: " + e.getMessage());
        }
    }

    private static String firstLine(String s) {
        return s == null ? "" : s.lines().findFirst().orElse(s);
    }
}
