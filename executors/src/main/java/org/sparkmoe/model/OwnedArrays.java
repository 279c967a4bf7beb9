package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.NativeBuffers;

import java.util.ArrayList;
import java.util.List;

/**
 * The off-heap arrays a model allocated for itself when it was built: the small tensors a loader widens (norms,
 * routers, biases, low-rank experts, and every weight of a DOUBLE model) or an adapter's factors. What a model
 * cache counts against its byte bound and frees on eviction. Arrays over a checkpoint's memory map are not owned
 * (their pages are file-backed and stay mapped for the JVM's life). Also the device resources the model holds (its
 * experts' GPU layers), closed on release; their bytes are the device's, not counted here.
 */
public final class OwnedArrays {
    private final List<INDArray> arrays = new ArrayList<>();
    private final List<AutoCloseable> resources = new ArrayList<>();
    private long bytes;
    private boolean released;

    /** Records {@code array} as owned; returns it. */
    public synchronized INDArray add(INDArray array) {
        if (released) {
            throw new IllegalStateException("these arrays were released");
        }
        arrays.add(array);
        bytes += array.length() * array.dataType().width();
        return array;
    }

    /** Records {@code resource} (device memory) as owned, closed by {@link #release()}; returns it. */
    public synchronized <T extends AutoCloseable> T closing(T resource) {
        if (released) {
            throw new IllegalStateException("these arrays were released");
        }
        resources.add(resource);
        return resource;
    }

    /** Bytes of the owned arrays. */
    public synchronized long bytes() {
        return bytes;
    }

    /**
     * Frees every owned array's native buffer now, instead of when the garbage collector finds it, and closes every
     * owned resource (the first failure to close is thrown after all were tried).
     */
    public synchronized void release() {
        NativeBuffers.free(arrays.toArray(INDArray[]::new));
        arrays.clear();
        RuntimeException failed = null;
        for (AutoCloseable r : resources) {
            try {
                r.close();
            } catch (Exception e) {
                if (failed == null) {
                    failed = new IllegalStateException("closing a model's device resource failed: " + e.getMessage(),
                            e);
                }
            }
        }
        resources.clear();
        bytes = 0;
        released = true;
        if (failed != null) {
            throw failed;
        }
    }
}
