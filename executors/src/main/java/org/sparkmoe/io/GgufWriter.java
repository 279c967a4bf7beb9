package org.sparkmoe.io;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Supplier;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * A GGUF (version 3) file of metadata and float32 tensors, as ggml's {@code gguf_write_to_file} lays it out, little
 * endian throughout:
 * <pre>
 *   "GGUF"  u32 version = 3  u64 tensor count  u64 key/value count
 *   per key/value:  string key  u32 value type  value        (string = u64 byte length + UTF-8 bytes)
 *   per tensor:     string name  u32 n_dims  u64 ne[n_dims]  u32 type (0 = F32)  u64 offset into the data
 *   zero padding to a multiple of 32 (general.alignment's default)
 *   per tensor:     its ne[0]·…·ne[n-1] floats, zero padding to a multiple of 32
 * </pre>
 * ne is ggml's order, fastest-varying first: a row-major [M, n] array has ne = [n, M]. Tensors are written in the
 * order added, each computed only when its bytes are due, and written atomically through the Hadoop FileSystem API.
 */
public final class GgufWriter {
    static final int VERSION = 3;
    static final int ALIGNMENT = 32;
    private static final int TYPE_UINT32 = 4;
    private static final int TYPE_STRING = 8;
    private static final int TYPE_ARRAY = 9;
    private static final int GGML_TYPE_F32 = 0;

    /** A float32 tensor: ggml dims (fastest first) and, when its bytes are due, its values. */
    public record F32Tensor(String name, long[] ne, Supplier<float[]> values) {
        long elements() {
            return Arrays.stream(ne).reduce(1, Math::multiplyExact);
        }
    }

    private final List<byte[]> keyValues = new ArrayList<>();
    private final List<F32Tensor> tensors = new ArrayList<>();
    private final Set<String> names = new HashSet<>();

    public GgufWriter putString(String key, String value) {
        Bytes out = new Bytes();
        out.string(key);
        out.u32(TYPE_STRING);
        out.string(value);
        keyValues.add(out.toByteArray());
        return this;
    }

    public GgufWriter putUint32(String key, int value) {
        Bytes out = new Bytes();
        out.string(key);
        out.u32(TYPE_UINT32);
        out.u32(value);
        keyValues.add(out.toByteArray());
        return this;
    }

    public GgufWriter putStringArray(String key, List<String> values) {
        Bytes out = new Bytes();
        out.string(key);
        out.u32(TYPE_ARRAY);
        out.u32(TYPE_STRING);
        out.u64(values.size());
        values.forEach(out::string);
        keyValues.add(out.toByteArray());
        return this;
    }

    public GgufWriter add(F32Tensor tensor) {
        if (!names.add(tensor.name())) {
            throw new IllegalArgumentException("a GGUF file holds one tensor per name, got " + tensor.name() + " twice");
        }
        tensors.add(tensor);
        return this;
    }

    /** Writes the file to {@code target} atomically. */
    public void write(FileSystem fs, Path target) {
        AtomicFile.write(fs, target, this::writeTo);
    }

    /** The file's bytes, in order, to {@code out}. */
    public void writeTo(OutputStream sink) throws IOException {
        Bytes header = new Bytes();
        header.out.write(new byte[] {'G', 'G', 'U', 'F'});
        header.u32(VERSION);
        header.u64(tensors.size());
        header.u64(keyValues.size());
        for (byte[] kv : keyValues) {
            header.out.write(kv);
        }
        long offset = 0;
        for (F32Tensor t : tensors) {
            header.string(t.name());
            header.u32(t.ne().length);
            for (long n : t.ne()) {
                header.u64(n);
            }
            header.u32(GGML_TYPE_F32);
            header.u64(offset);
            offset += padded(4 * t.elements());
        }
        byte[] head = header.toByteArray();
        OutputStream out = new BufferedOutputStream(sink, 1 << 16);
        out.write(head);
        out.write(new byte[Math.toIntExact(padded(head.length) - head.length)]);
        for (F32Tensor t : tensors) {
            float[] values = t.values().get();
            if (values.length != t.elements()) {
                throw new IllegalArgumentException(t.name() + ": dims " + Arrays.toString(t.ne()) + " hold "
                        + t.elements() + " values, got " + values.length);
            }
            ByteBuffer bytes = ByteBuffer.allocate(Math.toIntExact(padded(4L * values.length)))
                    .order(ByteOrder.LITTLE_ENDIAN);
            bytes.asFloatBuffer().put(values);
            out.write(bytes.array());
        }
        out.flush();
    }

    private static long padded(long n) {
        return (n + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }

    /** Little-endian primitives into a growing buffer. */
    private static final class Bytes {
        final java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();

        void u32(int v) {
            put(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(v).array());
        }

        void u64(long v) {
            put(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
        }

        void string(String s) {
            byte[] utf8 = s.getBytes(StandardCharsets.UTF_8);
            u64(utf8.length);
            put(utf8);
        }

        private void put(byte[] b) {
            out.write(b, 0, b.length);
        }

        byte[] toByteArray() {
            return out.toByteArray();
        }
    }
}
