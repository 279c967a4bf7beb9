package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.javacpp.Pointer;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * {@link NativeBuffers#free}: arrays that own their buffer are closed; views and nulls are left alone. And the JVM
 * flags every SparkMoE JVM runs with (conf/jvm.properties, this test's argLine) put no JavaCPP cap on the resident set.
 */
class NativeBuffersTest {

    @Test
    void freesOwnedArraysAndLeavesViewsAndNulls() {
        INDArray owned = Nd4j.ones(DataType.FLOAT, 4, 3);
        INDArray parent = Nd4j.ones(DataType.FLOAT, 4, 3);
        INDArray view = parent.get(NDArrayIndex.interval(1, 3), NDArrayIndex.all());
        assertTrue(owned.closeable());
        assertFalse(view.closeable(), "a view shares its parent's buffer");

        NativeBuffers.free(owned, null, view);

        assertTrue(owned.wasClosed());
        assertFalse(parent.wasClosed());
        assertEquals(2 * 3, view.sumNumber().intValue(), "the view still reads its parent");
        assertThrows(IllegalStateException.class, () -> owned.sumNumber());
    }

    /** JavaCPP's default cap, 4 × -Xmx, would count the mapped weights and every ND4J buffer against the heap. */
    @Test
    void theJvmFlagsLiftJavacppsCapOnTheResidentSet() {
        assertEquals(0, Pointer.maxPhysicalBytes(), "conf/jvm.properties sets org.bytedeco.javacpp.maxphysicalbytes=0");
    }
}
