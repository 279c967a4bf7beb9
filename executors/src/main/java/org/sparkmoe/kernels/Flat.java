package org.sparkmoe.kernels;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
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

    /** The elements of {@code a} in 'c' order, widened to float64 (FLOAT and DOUBLE read in bulk). */
    public static double[] values(INDArray a) {
        INDArray c = contiguous(a);
        int n = javaLength(c);
        if (n == 0 || (c.dataType() != DataType.FLOAT && c.dataType() != DataType.DOUBLE)) {
            return c.data().asDouble();
        }
        double[] out = new double[n];
        ByteBuffer bytes = c.data().asNio();
        if (c.dataType() == DataType.DOUBLE) {
            bytes.asDoubleBuffer().get(out);
        } else {
            FloatBuffer floats = bytes.asFloatBuffer();
            for (int i = 0; i < n; i++) {
                out[i] = floats.get(i);
            }
        }
        return out;
    }

    /** The elements of a FLOAT array {@code a} in 'c' order. */
    public static float[] floats(INDArray a) {
        if (a.dataType() != DataType.FLOAT) {
            throw new IllegalArgumentException("expected a FLOAT array, got " + a.dataType());
        }
        INDArray c = contiguous(a);
        float[] out = new float[javaLength(c)];
        if (out.length > 0) {
            c.data().asNio().asFloatBuffer().get(out);
        }
        return out;
    }

    /** A new 'c'-order FLOAT array of {@code shape} holding {@code values}. */
    public static INDArray array(float[] values, long[] shape) {
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, shape, 'c');
        if (out.length() != values.length) {
            throw new IllegalArgumentException(values.length + " values do not fill shape "
                    + java.util.Arrays.toString(shape));
        }
        if (values.length > 0) {
            out.data().asNio().asFloatBuffer().put(values);
        }
        return out;
    }

    private static INDArray contiguous(INDArray a) {
        return a.ordering() == 'c' && a.offset() == 0 && a.data().length() == a.length() ? a : a.dup('c');
    }

    /** The length of {@code a} as a Java array's: refused, naming the shape, past 2³¹ − 1 elements. */
    private static int javaLength(INDArray a) {
        if (a.length() > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("an array of shape " + java.util.Arrays.toString(a.shape())
                    + " has " + a.length() + " elements, more than a Java array holds (2^31 - 1)");
        }
        return (int) a.length();
    }

    /**
     * A new 'c'-order array of {@code shape} and {@code dataType} holding {@code values} (rounded to nearest for
     * FLOAT, as a cast; FLOAT and DOUBLE written in bulk).
     */
    public static INDArray array(double[] values, long[] shape, DataType dataType) {
        if (values.length == 0 || (dataType != DataType.FLOAT && dataType != DataType.DOUBLE)) {
            INDArray d = Nd4j.create(values, shape, 'c');
            return dataType == DataType.DOUBLE ? d : d.castTo(dataType);
        }
        INDArray out = Nd4j.createUninitialized(dataType, shape, 'c');
        if (out.length() != values.length) {
            throw new IllegalArgumentException(values.length + " values do not fill shape "
                    + java.util.Arrays.toString(shape));
        }
        ByteBuffer bytes = out.data().asNio();
        if (dataType == DataType.DOUBLE) {
            bytes.asDoubleBuffer().put(values);
        } else {
            FloatBuffer floats = bytes.asFloatBuffer();
            for (int i = 0; i < values.length; i++) {
                floats.put(i, (float) values[i]);
            }
        }
        return out;
    }

    /** float64 arithmetic rounded to float32 when {@code single} (correctly rounded for + − × ÷). */
    public static double round(double v, boolean single) {
        return single ? (float) v : v;
    }
}
