package org.sparkmoe.io;

import java.util.Collection;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A checkpoint whose linear weights may be FP8 block-quantized (config.json's {@code quantization_config}) as every
 * reader sees it: an F8_E4M3 weight is {@link #stored} as an {@link Fp8BlockMatrix} over its codes and its
 * {@code <name>_scale_inv} (dequantized per tile where it is used) and {@link #readFloat} gives it dequantized to
 * float32 (one tensor at a time, for writers and surgery). Every other tensor, and every name's dtype, is the base's.
 */
final class Fp8Weights implements TensorSource {
    /** The suffix of a weight's block scales: {@code <name>_scale_inv}. */
    private static final String SCALE = "_scale_inv";
    private final TensorSource base;
    private final int blockRows;
    private final int blockCols;

    private Fp8Weights(TensorSource base, int[] block) {
        this.base = base;
        this.blockRows = block[0];
        this.blockCols = block[1];
    }

    /** {@code tensors} itself when {@code config} declares no FP8 quantization, else the dequantizing view. */
    static TensorSource of(TensorSource tensors, ModelConfig config) {
        return config.weight_block_size == null || tensors instanceof Fp8Weights ? tensors
                : new Fp8Weights(tensors, config.weight_block_size);
    }

    /** {@code names} less the block scales of FP8 weights, which a reader sees folded into the weights. */
    static List<String> withoutScales(Collection<String> names, TensorSource tensors) {
        return names.stream().filter(n -> !isScale(n, tensors)).toList();
    }

    /** Whether {@code name} is {@code <w>_scale_inv} of an FP8 weight {@code w}. */
    private static boolean isScale(String name, TensorSource tensors) {
        String weight = name.substring(0, name.length() - SCALE.length());
        return name.endsWith(SCALE) && tensors.has(weight) && tensors.dtype(weight).isFp8();
    }

    @Override
    public boolean has(String name) {
        return base.has(name);
    }

    @Override
    public long[] shape(String name) {
        return base.shape(name);
    }

    @Override
    public DType dtype(String name) {
        return base.dtype(name);
    }

    @Override
    public INDArray readFloat(String name) {
        return base.dtype(name).isFp8() ? fp8(name).dequantize() : base.readFloat(name);
    }

    @Override
    public INDArray stored(String name) {
        return base.dtype(name).isFp8() ? fp8(name) : base.stored(name);
    }

    private Fp8BlockMatrix fp8(String name) {
        return new Fp8BlockMatrix(base.stored(name), base.readFloat(name + SCALE), blockRows, blockCols);
    }

    @Override
    public String describe() {
        return base.describe();
    }
}
