package org.sparkmoe.model;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class OwnedArraysTest {

    @Test
    void countsTheBytesOfWhatItOwnsAndFreesThemOnRelease() {
        OwnedArrays owned = new OwnedArrays();
        INDArray floats = owned.add(Nd4j.zeros(DataType.FLOAT, 3, 5));
        INDArray doubles = owned.add(Nd4j.zeros(DataType.DOUBLE, 7));
        assertEquals(3 * 5 * 4 + 7 * 8, owned.bytes());
        assertFalse(floats.wasClosed());
        owned.release();
        assertTrue(floats.wasClosed(), "released arrays are closed, not left to the garbage collector");
        assertTrue(doubles.wasClosed());
        assertEquals(0, owned.bytes());
        assertThrows(IllegalStateException.class, () -> owned.add(Nd4j.zeros(2)));
    }

    @Test
    void aViewIsCountedButNotClosed() {
        INDArray whole = Nd4j.zeros(DataType.FLOAT, 4, 4);
        OwnedArrays owned = new OwnedArrays();
        INDArray row = owned.add(whole.getRow(1));
        owned.release();
        assertFalse(row.wasClosed(), "a view shares its parent's buffer, which release must not free");
        assertEquals(0f, whole.getFloat(1, 1));
    }
}
