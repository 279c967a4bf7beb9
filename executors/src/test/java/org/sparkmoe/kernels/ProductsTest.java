package org.sparkmoe.kernels;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * {@link Products#times}: the bits of ND4J's {@code mmul} for the operand layouts the ALS fits multiply ('c' by 'c',
 * a transposed view by 'c', 'c' by a transposed view, 'f' by 'c'), in float64 and float32, as a new 'c'-order array.
 */
class ProductsTest {
    @Test
    void theBitsOfMmulAsACOrderArray() {
        Nd4j.getRandom().setSeed(5);
        for (DataType type : new DataType[] {DataType.DOUBLE, DataType.FLOAT}) {
            INDArray a = Nd4j.randn(type, 300, 169);
            INDArray b = Nd4j.randn(type, 169, 77);
            assertSame(a, b);
            assertSame(Nd4j.randn(type, 169, 300).transpose(), b);
            assertSame(a, Nd4j.randn(type, 77, 169).transpose());
            assertSame(a.dup('f'), b);
            assertSame(Nd4j.randn(type, 1024, 512), Nd4j.randn(type, 512, 700));
        }
    }

    private static void assertSame(INDArray a, INDArray b) {
        INDArray expected = a.mmul(b);
        INDArray actual = Products.times(a, b);
        assertEquals('c', actual.ordering());
        assertArrayEquals(expected.shape(), actual.shape());
        assertArrayEquals(expected.dup('c').data().asDouble(), actual.data().asDouble(),
                a.ordering() + (a.isView() ? " view" : "") + " × " + b.ordering() + (b.isView() ? " view" : ""));
    }
}
