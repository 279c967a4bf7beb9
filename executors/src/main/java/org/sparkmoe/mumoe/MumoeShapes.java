package org.sparkmoe.mumoe;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** One-line checks of tensor shapes and types; every failure names the tensor, what was expected and what was found. */
final class MumoeShapes {
    private MumoeShapes() {
    }

    static void require(String layer, String name, INDArray a, long... expected) {
        if (a == null) {
            throw new IllegalArgumentException(layer + ": " + name + " is missing, expected shape "
                    + Arrays.toString(expected));
        }
        if (!Arrays.equals(a.shape(), expected)) {
            throw new IllegalArgumentException(layer + ": " + name + " has shape " + Arrays.toString(a.shape())
                    + ", expected " + Arrays.toString(expected));
        }
    }

    static void requireType(String layer, String name, INDArray a, DataType type) {
        if (a.dataType() != type) {
            throw new IllegalArgumentException(layer + ": " + name + " is " + a.dataType() + ", expected " + type
                    + " like the other parameters");
        }
    }

    static void requirePositive(String layer, String name, long value) {
        if (value < 1) {
            throw new IllegalArgumentException(layer + ": " + name + " must be ≥ 1, found " + value);
        }
    }

    static DataType floating(String layer, INDArray a) {
        DataType t = a.dataType();
        if (t != DataType.FLOAT && t != DataType.DOUBLE) {
            throw new IllegalArgumentException(layer + ": parameters are " + t + ", expected FLOAT or DOUBLE");
        }
        return t;
    }

    /** x [T, I] of the layer's type with T ≥ 1. */
    static void requireInput(String layer, INDArray x, long inputSize, DataType type) {
        if (x == null || x.rank() != 2 || x.size(1) != inputSize || x.size(0) < 1) {
            throw new IllegalArgumentException(layer + ": x has shape "
                    + (x == null ? "null" : Arrays.toString(x.shape())) + ", expected [T, I] = [T ≥ 1, "
                    + inputSize + "]");
        }
        requireType(layer, "x", x, type);
    }

    /** dy [T, O] matching the pass. */
    static void requireOutputGradient(String layer, INDArray dy, long tokens, long outputSize, DataType type) {
        if (dy == null) {
            throw new IllegalArgumentException(layer + ": dy is missing, expected [T, O] = [" + tokens + ", "
                    + outputSize + "]");
        }
        require(layer, "dy", dy, tokens, outputSize);
        requireType(layer, "dy", dy, type);
    }
}
