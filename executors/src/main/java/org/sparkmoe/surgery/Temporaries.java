package org.sparkmoe.surgery;

import java.util.ArrayList;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The ND4J arrays one step of a loop allocates for itself, freed when the step ends instead of when the garbage
 * collector finds them: ALS sweeps make many block-sized float64 temporaries and little heap garbage, so their native
 * buffers would otherwise pile up until a collection (gigabytes beside a heap that never fills). Views are not owned
 * and are skipped; an array is freed once. Not for arrays that outlive the step.
 */
final class Temporaries implements AutoCloseable {
    private final List<INDArray> arrays = new ArrayList<>();

    /** Records {@code array} as freed at {@link #close}; returns it. */
    INDArray add(INDArray array) {
        arrays.add(array);
        return array;
    }

    @Override
    public void close() {
        for (INDArray a : arrays) {
            if (a.closeable()) {
                a.close();
            }
        }
        arrays.clear();
    }
}
