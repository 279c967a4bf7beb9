package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.WeightStack;

/**
 * One expert projection with frozen weights W [E, out, in] (in their stored type), an optional frozen bias b [E, out]
 * (gpt-oss) and optional LoRA (in the compute type):
 * {@code h = x·Wᵀ + s·(x·Aᵀ)·Bᵀ + b}, every product a grouped GEMM over the plan's expert row ranges.
 */
final class AdaptedProjection {
    private final WeightStack w;      // [E, out, in], frozen
    private final DataType type;      // what the projection computes in
    private final INDArray bias;      // [E, out] or null
    private final LoraExperts lora;   // null: the projection is not adapted
    private final GroupedGemm gemm;

    AdaptedProjection(String name, WeightStack w, INDArray bias, LoraExperts lora, GroupedGemm gemm) {
        if (lora != null && (lora.experts() != w.groups() || lora.out() != w.rows() || lora.in() != w.cols()
                || lora.a().dataType() != w.computeType())) {
            throw new IllegalArgumentException("LoRA on " + name + " does not fit its base weight "
                    + w + ": got a " + Arrays.toString(lora.a().shape())
                    + ", b " + Arrays.toString(lora.b().shape()) + " " + lora.a().dataType());
        }
        this.w = w;
        this.bias = bias;
        this.type = w.computeType();
        this.lora = lora;
        this.gemm = gemm;
    }

    /**
     * What the backward pass needs besides the input.
     *
     * @param h      [N, out] the projection's output
     * @param shrunk [N, R] s·(x·Aᵀ), null without LoRA
     */
    record Forward(INDArray h, INDArray shrunk) {
    }

    /** x [N, in] → h [N, out]. */
    Forward forward(INDArray x, int[] offsets) {
        long rows = x.size(0);
        INDArray h = Nd4j.createUninitialized(type, new long[] {rows, w.rows()}, 'c');      // [N, out]
        gemm.forward(x, w, offsets, h);                                                       // x·Wᵀ
        INDArray shrunk = null;
        if (lora != null) {
            shrunk = Nd4j.createUninitialized(type, new long[] {rows, lora.rank()}, 'c');     // [N, R]
            gemm.forward(x, lora.a(), offsets, shrunk);                                       // x·Aᵀ
            shrunk.muli(lora.scale());                                                        // s·x·Aᵀ
            gemm.forward(shrunk, lora.b(), offsets, h, true);                                 // h += s·x·Aᵀ·Bᵀ
        }
        if (bias != null) {
            for (int e = 0; e + 1 < offsets.length; e++) {                                    // h[rows of e] += b[e]
                if (offsets[e + 1] > offsets[e]) {
                    h.get(NDArrayIndex.interval(offsets[e], offsets[e + 1]), NDArrayIndex.all())
                            .addiRowVector(bias.getRow(e));
                }
            }
        }
        return new Forward(h, shrunk);
    }

    /**
     * The mirror of {@link #forward}: {@code dx (+)= dh·W + s·(dh·B)·A}, and the LoRA gradients.
     *
     * @param x  [N, in] the forward input
     * @param dh [N, out]
     * @param dx [N, in] written, or added to when {@code accumulate}
     * @return dA [E, R, in], dB [E, out, R]; null without LoRA
     */
    LoraGradients backward(INDArray x, Forward fwd, INDArray dh, int[] offsets, INDArray dx, boolean accumulate) {
        LoraGradients grads = null;
        boolean addToDx = accumulate;
        if (lora != null) {
            INDArray dB = Nd4j.createUninitialized(type, lora.b().shape(), 'c');         // [E, out, R]
            gemm.backwardWeight(dh, fwd.shrunk(), offsets, dB, false);                         // dhᵀ·(s·x·Aᵀ)
            INDArray dShrunk = Nd4j.createUninitialized(type, fwd.shrunk().shape(), 'c'); // [N, R]
            gemm.backwardInput(dh, lora.b(), offsets, dShrunk, false);                         // dh·B
            dShrunk.muli(lora.scale());                                                        // d(x·Aᵀ)
            INDArray dA = Nd4j.createUninitialized(type, lora.a().shape(), 'c');         // [E, R, in]
            gemm.backwardWeight(dShrunk, x, offsets, dA, false);                               // d(x·Aᵀ)ᵀ·x
            gemm.backwardInput(dShrunk, lora.a(), offsets, dx, addToDx);                       // dx (+)= ·A
            addToDx = true;
            grads = new LoraGradients(dA, dB);
        }
        gemm.backwardInput(dh, w, offsets, dx, addToDx);                                       // dx += dh·W
        return grads;
    }
}
