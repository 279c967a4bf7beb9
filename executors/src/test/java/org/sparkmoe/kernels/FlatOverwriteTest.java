package org.sparkmoe.kernels;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** {@link Flat#overwrite}: the elements {@link Flat#array(double[], long[], DataType)} would hold, in place. */
class FlatOverwriteTest {
    private static final double[] VALUES = {0.1, -2.5, 1.0 / 3, 7e-9, -0.0, 1e30};

    @Test
    void aContiguousArrayKeepsItsBufferAndGetsTheNewArraysElements() {
        for (DataType type : new DataType[] {DataType.FLOAT, DataType.DOUBLE}) {
            INDArray a = Nd4j.zeros(type, 2, 3);
            long address = a.data().address();
            Flat.overwrite(a, VALUES);
            assertEquals(address, a.data().address(), type + ": written in place");
            assertArrayEquals(Flat.values(Flat.array(VALUES, new long[] {2, 3}, type)), Flat.values(a), 0.0,
                    type.toString());
        }
    }

    @Test
    void aViewIsWrittenInOrderAndItsParentElsewhereIsUntouched() {
        INDArray parent = Nd4j.ones(DataType.FLOAT, 3, 4);
        INDArray column = parent.get(NDArrayIndex.all(), NDArrayIndex.point(1));        // [3], stride 4
        Flat.overwrite(column, new double[] {5, 6, 7});
        assertArrayEquals(new float[] {1, 5, 1, 1, 1, 6, 1, 1, 1, 7, 1, 1}, Flat.floats(parent), 0f);
    }

    @Test
    void theWrongNumberOfValuesIsRefused() {
        assertThrows(IllegalArgumentException.class, () -> Flat.overwrite(Nd4j.zeros(DataType.FLOAT, 4), VALUES));
    }
}
