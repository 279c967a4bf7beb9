package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.NativeBuffers;

import java.util.ArrayList;
import java.util.List;

/**
 * The off-heap arrays a model allocated for itself when it was built: the small tensors a loader widens (norms,
 * routers, biases, low-rank experts, and every weight of a DOUBLE model) or an adapter's factors. What a model
 * cache counts against its byte bound and frees on eviction. Arrays over a checkpoint's memory map are not owned
 * (their pages are file-backed and stay mapped for the JVM's life).
 */
public final class OwnedArrays {
    private final List<INDArray> arrays = new ArrayList<>();
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

    /** Bytes of the owned arrays. */
    public synchronized long bytes() {
        return bytes;
    }

    /** Frees every owned array's native buffer now, instead of when the garbage collector finds it. */
    public synchronized void release() {
        NativeBuffers.free(arrays.toArray(INDArray[]::new));
        arrays.clear();
        bytes = 0;
        released = true;
    }
}
