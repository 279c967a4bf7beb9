package org.sparkmoe.io;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Writes safetensors files through the Hadoop FileSystem API, atomically: the bytes go to a
 * hidden sibling {@code .NAME.tmp-UUID}, which is renamed onto the target only once complete. On
 * any failure the temporary file is deleted and an existing target is left as it was. The header is computed from the
 * tensors' names, dtypes and shapes first; then each tensor's bytes are streamed in order and counted against it.
 */
public final class SafeTensorsWriter {

    private static final ObjectMapper JSON = new ObjectMapper();

    private SafeTensorsWriter() {
    }

    /** Float32 arrays, written as F32 in map order. */
    public static void write(FileSystem fs, Path target, LinkedHashMap<String, INDArray> tensors,
            Map<String, String> metadata) {
        List<NamedTensor> named = new ArrayList<>(tensors.size());
        tensors.forEach((name, array) -> named.add(new NamedTensor.Floats(name, array)));
        write(fs, target, named, metadata);
    }

    /**
     * Tensors in list order with contiguous offsets; {@code metadata} becomes {@code __metadata__}, its keys sorted (the
     * same bytes for the same content, whatever the map's order).
     */
    public static void write(FileSystem fs, Path target, List<NamedTensor> tensors, Map<String, String> metadata) {
        byte[] header = header(target, tensors, metadata);
        AtomicFile.write(fs, target, out -> {
            out.write(ByteBuffer.allocate(Long.BYTES).order(ByteOrder.LITTLE_ENDIAN).putLong(0, header.length).array());
            out.write(header);
            CountingStream counted = new CountingStream(out);
            for (NamedTensor tensor : tensors) {
                long before = counted.count;
                tensor.writeData(counted);
                long written = counted.count - before;
                if (written != tensor.byteLength()) {
                    throw new IllegalStateException(target + ": tensor '" + tensor.name() + "' " + tensor.dtype()
                            + Arrays.toString(tensor.shape()) + " needs " + tensor.byteLength() + " bytes, its data had "
                            + written);
                }
            }
        });
    }

    /** Counts the bytes passed through, so that a tensor's data can be checked against its header entry. */
    private static final class CountingStream extends FilterOutputStream {
        long count;

        CountingStream(OutputStream out) {
            super(out);
        }

        @Override
        public void write(int b) throws IOException {
            out.write(b);
            count++;
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            out.write(b, off, len);
            count += len;
        }
    }

    /** JSON header, padded with spaces to a multiple of 8 bytes like the reference writer. */
    private static byte[] header(Path target, List<NamedTensor> tensors, Map<String, String> metadata) {
        ObjectNode root = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = root.putObject(SafeTensorsHeader.METADATA_KEY);
            new TreeMap<>(metadata).forEach(meta::put);
        }
        Set<String> seen = new HashSet<>();
        long offset = 0;
        for (NamedTensor tensor : tensors) {
            String name = tensor.name();
            if (name.equals(SafeTensorsHeader.METADATA_KEY)) {
                throw new IllegalArgumentException(target + ": tensor name '" + name + "' is reserved for metadata");
            }
            if (!seen.add(name)) {
                throw new IllegalArgumentException(target + ": tensor name '" + name + "' appears twice");
            }
            ObjectNode entry = root.putObject(name);
            entry.put("dtype", tensor.dtype().name());
            ArrayNode shape = entry.putArray("shape");
            for (long d : tensor.shape()) {
                shape.add(d);
            }
            long end = offset + tensor.byteLength();
            entry.putArray("data_offsets").add(offset).add(end);
            offset = end;
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(root);
        } catch (IOException e) {
            throw new UncheckedIOException("serialising the header of " + target, e);
        }
        int padded = (json.length + 7) / 8 * 8;
        byte[] header = Arrays.copyOf(json, padded);
        Arrays.fill(header, json.length, padded, (byte) ' ');
        return header;
    }
}
