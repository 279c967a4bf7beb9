package org.sparkmoe.kernels;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Bulk access, chunk by chunk, to the elements of a 'c'-contiguous FLOAT or DOUBLE array in its native memory, as
 * float64 (exact for float32; writing back to FLOAT rounds to nearest), or for a FLOAT array as stored
 * ({@link #readFloats}, {@link #writeFloats}). For element-wise loops split over threads:
 * every call makes its own pointer, so threads may read, and write disjoint ranges, at once. Keeps its array
 * reachable.
 */
public final class NativeElements {
    private final INDArray array;
    private final FloatPointer floats;    // element 0 of a FLOAT array, else null
    private final DoublePointer doubles;  // element 0 of a DOUBLE array, else null

    private NativeElements(INDArray array) {
        this.array = array;
        long shift = array.offset() - array.data().offset();   // a view's data() already starts at its offset
        if (array.dataType() == DataType.FLOAT) {
            this.floats = new FloatPointer(array.data().addressPointer()).position(shift);
            this.doubles = null;
        } else {
            this.floats = null;
            this.doubles = new DoublePointer(array.data().addressPointer()).position(shift);
        }
    }

    /** The elements of a non-empty {@code a}, copied to a new 'c'-order array first when {@code a} is not one. */
    public static NativeElements of(INDArray a) {
        if (a.dataType() != DataType.FLOAT && a.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("data type must be FLOAT or DOUBLE, got " + a.dataType());
        }
        if (a.length() == 0) {
            throw new IllegalArgumentException("no elements to access in an empty array");
        }
        return new NativeElements(contiguous(a) ? a : a.dup('c'));
    }

    /** values[0..n-1] = elements from..from+n-1; {@code scratch} holds at least n. */
    public void read(long from, double[] values, int n, float[] scratch) {
        if (floats != null) {
            readFloats(from, scratch, n);
            VectorRows.widen(scratch, values, n);
        } else {
            new DoublePointer(doubles).position(doubles.position() + from).get(values, 0, n);
        }
        java.lang.ref.Reference.reachabilityFence(array);
    }

    /** values[0..n-1] = elements from..from+n-1 of a FLOAT array, as stored. */
    public void readFloats(long from, float[] values, int n) {
        if (floats == null) {
            throw new IllegalStateException("a DOUBLE array has no float32 elements to read");
        }
        new FloatPointer(floats).position(floats.position() + from).get(values, 0, n);
        java.lang.ref.Reference.reachabilityFence(array);
    }

    /** Elements from..from+n-1 = values[0..n-1] (rounded to float32 for a FLOAT array); {@code scratch} holds
     * at least n. */
    public void write(long from, double[] values, int n, float[] scratch) {
        if (floats != null) {
            VectorRows.narrow(values, scratch, n);
            writeFloats(from, scratch, n);
        } else {
            new DoublePointer(doubles).position(doubles.position() + from).put(values, 0, n);
        }
        java.lang.ref.Reference.reachabilityFence(array);
    }

    /** Elements from..from+n-1 of a FLOAT array = values[0..n-1]. */
    public void writeFloats(long from, float[] values, int n) {
        if (floats == null) {
            throw new IllegalStateException("a DOUBLE array has no float32 elements to write");
        }
        new FloatPointer(floats).position(floats.position() + from).put(values, 0, n);
        java.lang.ref.Reference.reachabilityFence(array);
    }

    /**
     * Row-major with the default strides of its shape (offset allowed), so element i sits at position i: what {@link
     * #of} accesses in place, so that its writes reach {@code a} (otherwise they go to a copy).
     */
    public static boolean contiguous(INDArray a) {
        if (a.ordering() != 'c' || a.data() == null || a.data().addressPointer() == null) {
            return false;
        }
        long[] shape = a.shape();
        long[] stride = a.stride();
        long expected = 1;
        for (int d = shape.length - 1; d >= 0; d--) {
            if (shape[d] != 1 && stride[d] != expected) {
                return false;
            }
            expected *= shape[d];
        }
        return true;
    }
}
