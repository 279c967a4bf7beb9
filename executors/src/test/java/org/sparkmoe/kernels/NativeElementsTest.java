package org.sparkmoe.kernels;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class NativeElementsTest {
    /** A view's rows, read as stored floats and widened, from any element on: the values of the array. */
    @Test
    void aFloatArraysElementsReadAsStoredAndWidened() {
        float[] values = new float[6 * 5];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) Math.scalb(1.0 + i / 7.0, i % 9 - 4) * (i % 2 == 0 ? 1 : -1);
        }
        INDArray all = Nd4j.create(values, new long[] {6, 5}, 'c');
        INDArray rows = all.get(NDArrayIndex.interval(2, 5), NDArrayIndex.all());   // a view at element 10
        NativeElements elements = NativeElements.of(rows);
        float[] read = new float[7];
        elements.readFloats(3, read, 7);
        float[] expected = new float[7];
        System.arraycopy(values, 13, expected, 0, 7);
        assertArrayEquals(expected, read);
        double[] widened = new double[7];
        elements.read(3, widened, 7, new float[7]);
        double[] exact = new double[7];
        for (int i = 0; i < 7; i++) {
            exact[i] = expected[i];
        }
        assertArrayEquals(exact, widened, 0.0);
    }

    @Test
    void aDoubleArrayHasNoFloatsToRead() {
        NativeElements elements = NativeElements.of(Nd4j.zeros(DataType.DOUBLE, 4));
        assertThrows(IllegalStateException.class, () -> elements.readFloats(0, new float[4], 4));
    }
}
