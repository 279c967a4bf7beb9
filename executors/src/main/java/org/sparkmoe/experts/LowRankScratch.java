package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Tally of what one forward pass allocates: every new array goes through {@link #alloc} or {@link #count}, so
 * the pass can report the bytes it really allocated and the tests can hold that against the closed-form
 * accounting. One per call (never shared between threads).
 */
final class LowRankScratch {
    private long bytes;

    /** A new uninitialised 'c'-order array, counted. */
    INDArray alloc(DataType dt, long... shape) {
        return count(Nd4j.createUninitialized(dt, shape, 'c'));
    }

    /** A new zero-filled 'c'-order array, counted. */
    INDArray zeros(DataType dt, long... shape) {
        return count(Nd4j.zeros(dt, shape));
    }

    /** Counts an array an ND4J op has just allocated; returns it. */
    INDArray count(INDArray fresh) {
        bytes += fresh.length() * fresh.dataType().width();
        return fresh;
    }

    /** Counts Java heap arrays (routing metadata). */
    void countHeap(long heapBytes) {
        bytes += heapBytes;
    }

    long bytes() {
        return bytes;
    }
}
