package org.sparkmoe.io;

import org.nd4j.linalg.api.ndarray.INDArray;

/** Named tensors of a checkpoint, addressed by their Hugging Face keys. */
public interface TensorSource {
    boolean has(String name);

    /** The stored shape, read from the header without touching the data. */
    long[] shape(String name);

    /** The stored element type, read from the header; tensors computed in memory are float32. */
    default DType dtype(String name) {
        return DType.F32;
    }

    /** The tensor widened to a new float32 'c'-order array. */
    INDArray readFloat(String name);

    /**
     * How many blocks of its first dimension a writer reads {@code name} in ({@link #readFloatBlock}): more than 1
     * where this source builds the tensor in memory when it is read ({@link FusingTensors}), so the whole is never
     * held; 1 (the default) where reading it whole costs no copy of the whole, or is how the source answers.
     */
    default long writeBlocks(String name) {
        return 1;
    }

    /**
     * Block {@code block} of {@link #writeBlocks} equal blocks of the tensor's first dimension, float32 'c'-order,
     * the same values as that slice of {@link #readFloat}: [shape[0] / blocks, shape[1..]].
     */
    default INDArray readFloatBlock(String name, long block) {
        if (writeBlocks(name) != 1 || block != 0) {
            throw new IllegalStateException(describe() + ": no block " + block + " of tensor " + name);
        }
        return readFloat(name);
    }

    /**
     * The tensor for computing with, never to be written: in its stored type over a memory map where the source is a
     * local safetensors file (no copy; see {@link SafeTensorsFile#stored}), else the float32 array of
     * {@link #readFloat}.
     */
    default INDArray stored(String name) {
        return readFloat(name);
    }

    /**
     * The stored bytes of a U8 tensor (gpt-oss's MXFP4 blocks and scales), read-only, over a memory map where the
     * source is a local safetensors file; sources without byte tensors refuse.
     */
    default java.nio.ByteBuffer bytes(String name) {
        throw new CheckpointFormatException(describe() + ": cannot read the bytes of tensor " + name);
    }

    /** Where the tensors come from, for error messages. */
    String describe();
}
