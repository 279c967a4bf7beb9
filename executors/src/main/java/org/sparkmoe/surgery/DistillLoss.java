package org.sparkmoe.surgery;

import java.util.Arrays;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.ExpertGradients;
import org.sparkmoe.moe.MoeBlock;

/**
 * The layer-wise distillation loss of a low-rank-experts MoE block (the student) against the original MoE layer's
 * outputs, the relative squared error over a batch of T tokens:
 * <pre>
 *   ŷ = student(x)                         [T, D]   (routing from the frozen router)
 *   L = Σ_t ‖ŷ_t − y_t‖² / Σ_t ‖y_t‖²      scalar   (the mean squared error over a constant)
 *   dL/dŷ = 2 (ŷ − y) / Σ_t ‖y_t‖²         [T, D]
 * </pre>
 * The gradients of the LoRA factors follow from the block's backward pass with that dŷ; the base and the router
 * stay frozen. Works in the weights' data type (FLOAT to train, DOUBLE to check).
 */
public final class DistillLoss {
    private DistillLoss() {
    }

    /** The loss and the experts' gradients (use only the LoRA factors'). */
    public record Result(double loss, ExpertGradients grads) {
    }

    /**
     * @param x [T, D] the original layer's inputs
     * @param y [T, D] the original layer's outputs
     */
    public static double value(MoeBlock student, INDArray x, INDArray y) {
        check(x, y);
        INDArray diff = student.forward(x).out().sub(y);                              // [T, D]
        return squaredNorm(diff) / squaredNorm(y);
    }

    /** The loss and its gradients (forward, then the block's backward from dL/dŷ). */
    public static Result gradient(MoeBlock student, INDArray x, INDArray y) {
        check(x, y);
        MoeBlock.Context pass = student.forward(x);
        INDArray diff = pass.out().sub(y);                                            // [T, D] ŷ − y
        double norm = squaredNorm(y);
        double loss = squaredNorm(diff) / norm;
        INDArray dy = diff.muli(2.0 / norm);                                          // [T, D] dL/dŷ
        return new Result(loss, student.backward(pass, dy).experts());
    }

    /** Σ a², as the square of ND4J's norm2 (reduced in the array's own type). */
    static double squaredNorm(INDArray a) {
        double n = a.norm2Number().doubleValue();
        return n * n;
    }

    private static void check(INDArray x, INDArray y) {
        if (!Arrays.equals(x.shape(), y.shape()) || x.rank() != 2) {
            throw new IllegalArgumentException("distillation inputs and targets must both be [T, D], got "
                    + Arrays.toString(x.shape()) + " and " + Arrays.toString(y.shape()));
        }
    }
}
