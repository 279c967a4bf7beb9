package org.sparkmoe.io;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * One tensor to write to a safetensors file: its name, dtype, shape and little-endian bytes. The header is computed
 * from names, dtypes and shapes alone, so the bytes can be produced while they are written, one tensor at a time.
 */
public sealed interface NamedTensor permits NamedTensor.Floats, NamedTensor.Longs, NamedTensor.Streamed {

    /** Elements copied per chunk when streaming: 1 MiB of output per chunk at most. */
    int CHUNK_ELEMENTS = 1 << 17;

    String name();

    DType dtype();

    long[] shape();

    /** product(shape) elements in row-major order, little-endian, written in bounded chunks. */
    void writeData(OutputStream out) throws IOException;

    default long byteLength() {
        return Math.multiplyExact(Arrays.stream(shape()).reduce(1, Math::multiplyExact), dtype().byteSize());
    }

    /**
     * A float32 array written as {@code dtype} (F32, BF16 rounded to nearest even, F16, or F64), in bounded chunks; a
     * bf16 or f16 array (a mapped checkpoint's tensor in its stored type) is widened one chunk at a time, exactly.
     */
    record Floats(String name, INDArray array, DType dtype) implements NamedTensor {

        public Floats {
            Objects.requireNonNull(name, "name");
            if (array.dataType() != DataType.FLOAT && array.dataType() != DataType.BFLOAT16
                    && array.dataType() != DataType.HALF) {
                throw new IllegalArgumentException("tensor '" + name + "': expected a FLOAT, BFLOAT16 or HALF array, "
                        + "found " + array.dataType());
            }
            if (!ElementEncoder.FLOAT_TYPES.contains(dtype)) {
                throw new IllegalArgumentException("tensor '" + name + "': cannot write floats as " + dtype);
            }
        }

        /** Written as F32. */
        public Floats(String name, INDArray array) {
            this(name, array, DType.F32);
        }

        @Override
        public long[] shape() {
            return array.shape();
        }

        @Override
        public void writeData(OutputStream out) throws IOException {
            long n = array.length();
            if (n == 0) {
                return;
            }
            INDArray flat = array.reshape('c', new long[] {n}); // [n], a view when array is 'c'-contiguous
            ByteBuffer chunk = ByteBuffer.allocate((int) Math.min(n, CHUNK_ELEMENTS) * dtype.byteSize())
                    .order(ByteOrder.LITTLE_ENDIAN);
            for (long start = 0; start < n; start += CHUNK_ELEMENTS) {
                long stop = Math.min(n, start + CHUNK_ELEMENTS);
                INDArray part = flat.get(NDArrayIndex.interval(start, stop));
                // a bf16/f16 array (a mapped checkpoint's tensor) is widened one chunk at a time, exactly
                float[] values = (part.dataType() == DataType.FLOAT ? part : part.castTo(DataType.FLOAT)).toFloatVector();
                chunk.clear();
                if (dtype == DType.F32) {
                    chunk.asFloatBuffer().put(values);                           // bulk: the common case
                } else {
                    ElementEncoder.fromFloats(dtype, values, 0, values.length, chunk);
                }
                out.write(chunk.array(), 0, values.length * dtype.byteSize());
            }
        }
    }

    /** Integers (token ids, counts) of the given shape, written as I64. */
    record Longs(String name, long[] shape, long[] values) implements NamedTensor {

        public Longs {
            Objects.requireNonNull(name, "name");
            shape = shape.clone();
            long expected = Arrays.stream(shape).reduce(1, Math::multiplyExact);
            if (expected != values.length) {
                throw new IllegalArgumentException("tensor '" + name + "': shape " + Arrays.toString(shape)
                        + " needs " + expected + " values, found " + values.length);
            }
        }

        @Override
        public long[] shape() {
            return shape.clone();
        }

        @Override
        public DType dtype() {
            return DType.I64;
        }

        @Override
        public void writeData(OutputStream out) throws IOException {
            ByteBuffer chunk = ByteBuffer.allocate(Math.min(values.length, CHUNK_ELEMENTS) * Long.BYTES)
                    .order(ByteOrder.LITTLE_ENDIAN);
            for (int start = 0; start < values.length; start += CHUNK_ELEMENTS) {
                int count = Math.min(values.length - start, CHUNK_ELEMENTS);
                chunk.clear();
                chunk.asLongBuffer().put(values, start, count);
                out.write(chunk.array(), 0, count * Long.BYTES);
            }
        }
    }

    /** Writes a tensor's bytes, in bounded chunks, without holding the whole tensor. */
    @FunctionalInterface
    interface Producer {
        void writeTo(OutputStream out) throws IOException;
    }

    /**
     * A tensor of any dtype whose bytes a producer writes when its turn comes (e.g. generated weights): nothing of it
     * is held before or after. The writer checks that exactly {@link #byteLength()} bytes arrive.
     */
    record Streamed(String name, DType dtype, long[] shape, Producer producer) implements NamedTensor {

        public Streamed {
            Objects.requireNonNull(name, "name");
            Objects.requireNonNull(dtype, "dtype");
            Objects.requireNonNull(producer, "producer");
            shape = shape.clone();
            for (long d : shape) {
                if (d < 0) {
                    throw new IllegalArgumentException("tensor '" + name + "': negative dimension in shape "
                            + Arrays.toString(shape));
                }
            }
        }

        @Override
        public long[] shape() {
            return shape.clone();
        }

        @Override
        public void writeData(OutputStream out) throws IOException {
            producer.writeTo(out);
        }
    }
}
