package org.sparkmoe.lora;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

/**
 * {@code act = silu(h1) ⊙ h3} and its backward, for FLOAT or DOUBLE arrays behind one method: values are
 * computed in float64 and, for FLOAT, rounded to float32 exactly where a float32 loop rounds (so the forward is
 * bit-identical to {@link org.sparkmoe.kernels.Activations#swiGlu}). silu(z) = z·σ(z), σ'(z) = σ(z)(1 − σ(z)).
 */
public final class SwiGlu {
    private SwiGlu() {
    }

    /** h1, h3 [N, I] → act [N, I]. */
    public static INDArray forward(INDArray h1, INDArray h3) {
        checkSame("swiglu forward", h1, h3);
        boolean single = h1.dataType() == DataType.FLOAT;
        double[] g = Flat.values(h1);
        double[] u = Flat.values(h3);
        double[] act = new double[g.length];
        for (int i = 0; i < g.length; i++) {
            double z = g[i];
            act[i] = Flat.round(Flat.round(z / (1.0 + Math.exp(-z)), single) * u[i], single);
        }
        return Flat.array(act, h1.shape(), h1.dataType());
    }

    /**
     * The mirror of {@link #forward}: dh1 = dact ⊙ h3 ⊙ σ(h1)(1 + h1(1 − σ(h1))), dh3 = dact ⊙ silu(h1).
     *
     * @return {dh1, dh3}, each [N, I]
     */
    public static INDArray[] backward(INDArray h1, INDArray h3, INDArray dAct) {
        checkSame("swiglu backward", h1, h3);
        checkSame("swiglu backward", h1, dAct);
        double[] g = Flat.values(h1);
        double[] u = Flat.values(h3);
        double[] d = Flat.values(dAct);
        double[] dh1 = new double[g.length];
        double[] dh3 = new double[g.length];
        for (int i = 0; i < g.length; i++) {
            double z = g[i];
            double sig = 1.0 / (1.0 + Math.exp(-z));
            dh3[i] = d[i] * z * sig;
            dh1[i] = d[i] * u[i] * sig * (1.0 + z * (1.0 - sig));
        }
        return new INDArray[] {Flat.array(dh1, h1.shape(), h1.dataType()), Flat.array(dh3, h1.shape(), h1.dataType())};
    }

    private static void checkSame(String op, INDArray a, INDArray b) {
        if (!Arrays.equals(a.shape(), b.shape()) || a.dataType() != b.dataType()) {
            throw new IllegalArgumentException(op + ": arrays disagree, " + Arrays.toString(a.shape()) + " "
                    + a.dataType() + " vs " + Arrays.toString(b.shape()) + " " + b.dataType());
        }
        if (a.dataType() != DataType.FLOAT && a.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException(op + ": data type must be FLOAT or DOUBLE, got " + a.dataType());
        }
    }
}
