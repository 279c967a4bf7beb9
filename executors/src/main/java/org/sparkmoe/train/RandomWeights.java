package org.sparkmoe.train;

import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ElementEncoder;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.model.ModelSchema;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

/**
 * Random weights in the exact names, shapes and dtype a config.json implies ({@link ModelSchema#expectedStored}:
 * gpt-oss's experts fused, as transformers stores them), for
 * trying a model's memory and speed before downloading it. Like transformers' {@code _init_weights}: linear weights,
 * routers and embeddings are normal(0, std) with std = the config's {@code initializer_range}, RMSNorm weights are
 * 1 and biases 0, so a forward pass gives finite logits.
 *
 * <p>Deterministic and independent of write order: tensor {@code name} is cut into chunks of {@link #CHUNK_ELEMENTS}
 * elements in row-major order, and chunk c is drawn from a {@link SplittableRandom} seeded with
 * {@code Seeds.derive(Seeds.derive(seed, name), "chunk/" + c)}, Box–Muller with {@link StrictMath} (the same bits on
 * every JVM and CPU), each value rounded to the dtype (nearest even). Chunks are generated on several threads and
 * written in order, so the bytes do not depend on the thread count either. Memory: a few chunks per thread, never a
 * whole tensor.
 */
public final class RandomWeights {
    /** Elements per independently seeded chunk (part of the definition of the bytes: do not change). */
    public static final int CHUNK_ELEMENTS = 1 << 20;

    private RandomWeights() {
    }

    /** What a tensor is filled with. */
    enum Fill { NORMAL, ONES, ZEROS }

    /**
     * Every tensor of {@code config}'s checkpoint, in checkpoint order, as producers: nothing is generated until a
     * writer asks for a tensor's bytes.
     */
    public static List<NamedTensor> tensors(ModelConfig config, DType dtype, long seed, double std) {
        if (!ElementEncoder.FLOAT_TYPES.contains(dtype)) {
            throw new IllegalArgumentException("random weights need a floating-point dtype, got " + dtype);
        }
        if (!(std > 0) || Double.isInfinite(std)) {
            throw new IllegalArgumentException("std (initializer_range) must be a positive number, got " + std);
        }
        List<NamedTensor> out = new ArrayList<>();
        for (Map.Entry<String, long[]> e : ModelSchema.expectedStored(config).entrySet()) {
            String name = e.getKey();
            if (name.equals(CheckpointLayout.lmHead()) && config.tie_word_embeddings) {
                continue;
            }
            long[] shape = e.getValue();
            long elements = Arrays.stream(shape).reduce(1, Math::multiplyExact);
            Fill fill = fillOf(name);
            long tensorSeed = Seeds.derive(seed, name);
            out.add(new NamedTensor.Streamed(name, dtype, shape,
                    stream -> write(elements, dtype, fill, tensorSeed, (float) std, stream)));
        }
        return out;
    }

    static Fill fillOf(String name) {
        if (name.endsWith(".bias") || name.endsWith("_bias")) {
            return Fill.ZEROS;
        }
        if (name.endsWith("_layernorm.weight") || name.equals(CheckpointLayout.finalNorm())) {
            return Fill.ONES;
        }
        return Fill.NORMAL;
    }

    /** Writes the tensor's elements chunk by chunk; each round generates up to one chunk per core in parallel. */
    private static void write(long elements, DType dtype, Fill fill, long tensorSeed, float std, OutputStream out)
            throws IOException {
        long chunks = (elements + CHUNK_ELEMENTS - 1) / CHUNK_ELEMENTS;
        int parallel = Math.max(1, Runtime.getRuntime().availableProcessors());
        for (long first = 0; first < chunks; first += parallel) {
            long start = first;
            int count = (int) Math.min(parallel, chunks - first);
            byte[][] bytes = IntStream.range(0, count).parallel()
                    .mapToObj(i -> chunk(elements, start + i, dtype, fill, tensorSeed, std))
                    .toArray(byte[][]::new);
            for (byte[] b : bytes) {
                out.write(b);
            }
        }
    }

    /** Chunk {@code c} of the tensor, encoded. */
    static byte[] chunk(long elements, long c, DType dtype, Fill fill, long tensorSeed, float std) {
        int n = (int) Math.min(CHUNK_ELEMENTS, elements - c * CHUNK_ELEMENTS);
        float[] values = new float[n];
        switch (fill) {
            case ONES -> Arrays.fill(values, 1f);
            case ZEROS -> { }
            case NORMAL -> gaussians(new SplittableRandom(Seeds.derive(tensorSeed, "chunk/" + c)), values, std);
        }
        ByteBuffer buffer = ByteBuffer.allocate(n * dtype.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        ElementEncoder.fromFloats(dtype, values, 0, n, buffer);
        return buffer.array();
    }

    /** Box–Muller: two uniforms in (0, 1] give two independent normal(0, std) values. */
    static void gaussians(SplittableRandom random, float[] dst, float std) {
        for (int i = 0; i < dst.length; i += 2) {
            double u1 = 1.0 - random.nextDouble(); // (0, 1]: the log is finite
            double u2 = random.nextDouble();
            double r = std * StrictMath.sqrt(-2.0 * StrictMath.log(u1));
            double theta = 2.0 * Math.PI * u2;
            dst[i] = (float) (r * StrictMath.cos(theta));
            if (i + 1 < dst.length) {
                dst[i + 1] = (float) (r * StrictMath.sin(theta));
            }
        }
    }
}
