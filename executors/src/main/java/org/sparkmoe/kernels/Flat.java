package org.sparkmoe.kernels;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Dtype-generic elementwise code for FLOAT and DOUBLE arrays behind one method: read the elements as float64
 * (exact for float32), compute in float64, round with {@link #round} where a float32 loop would round, write
 * back in the array's own data type.
 */
public final class Flat {
    private Flat() {
    }

    /** The elements of {@code a} in 'c' order, widened to float64. */
    public static double[] values(INDArray a) {
        INDArray c = a.ordering() == 'c' && a.offset() == 0 && a.data().length() == a.length() ? a : a.dup('c');
        return c.data().asDouble();
    }

    /** A new 'c'-order array of {@code shape} and {@code dataType} holding {@code values}. */
    public static INDArray array(double[] values, long[] shape, DataType dataType) {
        INDArray d = Nd4j.create(values, shape, 'c');
        return dataType == DataType.DOUBLE ? d : d.castTo(dataType);
    }

    /** float64 arithmetic rounded to float32 when {@code single} (correctly rounded for + − × ÷). */
    public static double round(double v, boolean single) {
        return single ? (float) v : v;
    }
}
