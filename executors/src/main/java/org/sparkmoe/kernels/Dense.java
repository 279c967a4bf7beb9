package org.sparkmoe.kernels;

import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Dense products with Hugging Face Linear weights ([out, in]) in their stored type (float32, float64, or bf16/fp16
 * widened per tile): one grouped product with a single group, so dense and expert weights take the same tiles and
 * the same widening. Rows are FLOAT or DOUBLE; results are new 'c'-order arrays of the rows' type.
 */
public final class Dense {
    private static final GroupedGemm SERIAL = new Nd4jGroupedGemm();

    private Dense() {
    }

    /** y [T, out] = x [T, in] · wᵀ, w [out, in]. */
    public static INDArray linear(INDArray x, INDArray w) {
        INDArray y = Nd4j.createUninitialized(x.dataType(), new long[] {x.size(0), w.size(0)}, 'c');
        SERIAL.forward(x, one(w), all(x), y, false);
        return y;
    }

    /** dx [T, in] = dy [T, out] · w, w [out, in]: the input gradient of {@link #linear(INDArray, INDArray)}. */
    public static INDArray linearBackward(INDArray dy, INDArray w) {
        INDArray dx = Nd4j.createUninitialized(dy.dataType(), new long[] {dy.size(0), w.size(1)}, 'c');
        linearBackward(dy, w, dx, false);
        return dx;
    }

    /** dx [T, in] (+)= dy [T, out] · w, w [out, in]; adds when {@code accumulate}. */
    public static void linearBackward(INDArray dy, INDArray w, INDArray dx, boolean accumulate) {
        SERIAL.backwardInput(dy, one(w), all(dy), dx, accumulate);
    }

    /** y [T, out] = x [T, in] · wᵀ + bias, bias [out] or null. */
    public static INDArray linear(INDArray x, INDArray w, INDArray bias) {
        INDArray y = linear(x, w);
        return bias == null ? y : y.addiRowVector(bias);
    }

    private static WeightStack one(INDArray w) {
        if (w.rank() != 2) {
            throw new IllegalArgumentException("a dense weight is [out, in], got rank " + w.rank());
        }
        return WeightStack.of(List.of(w));
    }

    private static int[] all(INDArray rows) {
        return new int[] {0, Math.toIntExact(rows.size(0))};
    }
}
