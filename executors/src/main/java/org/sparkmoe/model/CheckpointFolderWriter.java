package org.sparkmoe.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.FileUtil;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.AtomicFolder;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.io.TensorSource;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.IntFunction;

/**
 * Writes a complete Hugging Face checkpoint folder: config.json (the given JSON with the dtype fields that are
 * present set to the written dtype, and without {@code quantization_config}: MXFP4 experts are written widened, FP8
 * weights dequantized), the named tensors in the given order, as one model.safetensors or, past the
 * shard size, model-0000i-of-0000N.safetensors plus model.safetensors.index.json, any extra files, and every other
 * file of the source folder (tokenizer, generation config) copied. The config is parsed and the tensors checked
 * against it ({@link ModelSchema#check}) before anything is written. The folder is built in a hidden sibling and
 * renamed into place once complete, so a reader never sees it half-written; it must not exist beforehand. A second
 * entry point writes tensors of any dtype from producers that stream their bytes (generated weights), so that neither
 * path holds more than one tensor.
 */
public final class CheckpointFolderWriter {
    /** Largest shard written by default: 5 GB, as transformers' save_pretrained ({@code max_shard_size="5GB"}). */
    public static final long DEFAULT_SHARD_BYTES = 5_000_000_000L;
    private static final String SINGLE_FILE = "model.safetensors";
    private static final Set<DType> STORED_FLOATS = EnumSet.of(DType.F32, DType.BF16, DType.F16);
    private static final String INDEX_FILE = "model.safetensors.index.json";
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private CheckpointFolderWriter() {
    }

    /**
     * @param sourceDir  the folder whose other files (tokenizer etc.) are copied
     * @param config     the new config.json
     * @param tensors    where every tensor in {@code names} is read from
     * @param names      the tensors to write, in order
     * @param extraFiles file name → content, written into the folder too (e.g. a report); must not clash
     * @param dtype      what every tensor is written as (F32, BF16, F16); null: the source's, as its embedding is
     *                   stored (a bf16 model stays bf16, at half the bytes of float32)
     */
    public static void write(Path sourceDir, ObjectNode config, TensorSource tensors, List<String> names,
            Map<String, byte[]> extraFiles, Path outDir, Configuration conf, long maxShardBytes, DType dtype) {
        requireShardBytes(maxShardBytes);
        DType out = dtype != null ? dtype : sourceDType(tensors);
        ObjectNode json = config.deepCopy();
        for (String field : List.of("torch_dtype", "dtype")) {
            if (json.has(field)) {
                json.put(field, ModelShape.torchName(out));
            }
        }
        ModelSchema.check(ModelConfig.parse(new String(jsonBytes(json), StandardCharsets.UTF_8),
                new Path(outDir, "config.json").toString()), tensors);    // as read: FP8 weights beside their scales
        byte[] configBytes = jsonBytes(unquantized(json));
        AtomicFolder.write(outDir, conf, "checkpoint folder", (fs, staging) -> {
            AtomicFile.write(fs, new Path(staging, "config.json"), configBytes);
            writeTensors(fs, staging, tensors, names, maxShardBytes, out);
            for (Map.Entry<String, byte[]> extra : extraFiles.entrySet()) {
                AtomicFile.write(fs, new Path(staging, extra.getKey()), extra.getValue());
            }
            copyOtherFiles(sourceDir, conf, fs, staging, extraFiles.keySet());
        });
    }

    /**
     * Writes a new checkpoint folder from tensors that are produced while they are written (e.g. generated weights,
     * in any dtype): config.json as given (less {@code quantization_config}), the tensors in list order, sharded like
     * {@link #write(Path, ObjectNode, TensorSource, List, Map, Path, Configuration, long) the other entry point}, and
     * the extra files (a tokenizer). Only one tensor's producer runs at a time and nothing is kept, so memory does not
     * grow with the model. The config is parsed and the tensors' names and shapes checked against it
     * ({@link ModelSchema#check}) before anything is written; the folder appears only once complete.
     *
     * @return the bytes of tensor data written (the index's {@code metadata.total_size})
     */
    public static long write(ObjectNode config, List<NamedTensor> tensors, Map<String, byte[]> extraFiles, Path outDir,
            Configuration conf, long maxShardBytes) {
        requireShardBytes(maxShardBytes);
        byte[] configBytes = jsonBytes(unquantized(config.deepCopy()));
        Map<String, long[]> shapes = new LinkedHashMap<>();
        List<Long> sizes = new ArrayList<>(tensors.size());
        for (NamedTensor tensor : tensors) {
            if (shapes.put(tensor.name(), tensor.shape()) != null) {
                throw new IllegalArgumentException(outDir + ": tensor " + tensor.name() + " appears twice");
            }
            sizes.add(tensor.byteLength());
        }
        ModelSchema.check(ModelConfig.parse(new String(configBytes, StandardCharsets.UTF_8),
                new Path(outDir, "config.json").toString()), shapes, outDir.toString());
        if (extraFiles.containsKey("config.json") || extraFiles.keySet().stream().anyMatch(
                name -> name.endsWith(".safetensors") || name.equals(INDEX_FILE))) {
            throw new IllegalArgumentException("extra files must not replace config.json or weights: "
                    + extraFiles.keySet());
        }
        long[] total = new long[1];
        AtomicFolder.write(outDir, conf, "checkpoint folder", (fs, staging) -> {
            AtomicFile.write(fs, new Path(staging, "config.json"), configBytes);
            total[0] = writeShards(fs, staging, shard(sizes, maxShardBytes),
                    new ArrayList<>(shapes.keySet()), sizes, tensors::get);
            for (Map.Entry<String, byte[]> extra : extraFiles.entrySet()) {
                AtomicFile.write(fs, new Path(staging, extra.getKey()), extra.getValue());
            }
        });
        return total[0];
    }

    /** The float type the source's embedding is stored in; F32 when it is not a float type. */
    static DType sourceDType(TensorSource tensors) {
        String embed = CheckpointLayout.embedTokens();
        DType stored = tensors.has(embed) ? tensors.dtype(embed) : DType.F32;
        return stored == DType.BF16 || stored == DType.F16 ? stored : DType.F32;
    }

    private static void writeTensors(FileSystem fs, Path dir, TensorSource tensors, List<String> names,
            long maxShardBytes, DType dtype) throws IOException {
        List<Long> sizes = new ArrayList<>(names.size());
        for (String name : names) {
            sizes.add(dtype.byteSize() * Arrays.stream(tensors.shape(name)).reduce(1, Math::multiplyExact));
        }
        writeShards(fs, dir, shard(sizes, maxShardBytes), names, sizes, i -> {
            String name = names.get(i);
            // read when its bytes are written, one tensor at a time; a float tensor in its stored type over the
            // source's map, widened a chunk at a time, so not even one tensor is widened whole (a 152k vocabulary's
            // embedding would be 1.2 GB of float32); FP8 and other codes are decoded by readFloat; a tensor the
            // source builds when read (the fused expert layout) comes block by block of its first dimension
            long blocks = tensors.writeBlocks(name);
            return new NamedTensor.Streamed(name, dtype, tensors.shape(name), out -> {
                if (blocks > 1) {
                    for (long b = 0; b < blocks; b++) {
                        new NamedTensor.Floats(name, tensors.readFloatBlock(name, b), dtype).writeData(out);
                    }
                } else {
                    new NamedTensor.Floats(name, STORED_FLOATS.contains(tensors.dtype(name))
                            ? tensors.stored(name) : tensors.readFloat(name), dtype).writeData(out);
                }
            });
        });
    }

    /**
     * Groups tensors (by index, in order) into shards of at most {@code maxShardBytes}, like transformers'
     * {@code save_pretrained}: a shard is closed when the next tensor would overflow it; a tensor larger than the
     * limit gets a shard of its own.
     */
    static List<List<Integer>> shard(List<Long> sizes, long maxShardBytes) {
        List<List<Integer>> shards = new ArrayList<>();
        long shardBytes = 0;
        for (int i = 0; i < sizes.size(); i++) {
            long bytes = sizes.get(i);
            if (shards.isEmpty() || shardBytes + bytes > maxShardBytes && !shards.get(shards.size() - 1).isEmpty()) {
                shards.add(new ArrayList<>());
                shardBytes = 0;
            }
            shards.get(shards.size() - 1).add(i);
            shardBytes += bytes;
        }
        return shards;
    }

    private static void requireShardBytes(long maxShardBytes) {
        if (maxShardBytes < 1) {
            throw new IllegalArgumentException("maxShardBytes must be ≥ 1, got " + maxShardBytes);
        }
    }

    /**
     * {@code json} without {@code quantization_config}: the writer writes float tensors only, so an FP8 source's
     * weights are written dequantized (in the source's float type, see {@link #sourceDType}) and the output is no
     * longer quantized.
     */
    private static ObjectNode unquantized(ObjectNode json) {
        json.remove("quantization_config");
        return json;
    }

    private static byte[] jsonBytes(ObjectNode json) {
        try {
            return (JSON.writeValueAsString(json) + "\n").getBytes(StandardCharsets.UTF_8);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising config.json", e);
        }
    }

    /** One model.safetensors, or model-0000i-of-0000N.safetensors plus the index; returns the total tensor bytes. */
    private static long writeShards(FileSystem fs, Path dir, List<List<Integer>> shards, List<String> names,
            List<Long> sizes, IntFunction<NamedTensor> tensorAt) throws IOException {
        long total = 0;
        Map<String, String> weightMap = new LinkedHashMap<>();
        for (int s = 0; s < shards.size(); s++) {
            String file = shards.size() == 1 ? SINGLE_FILE
                    : String.format("model-%05d-of-%05d.safetensors", s + 1, shards.size());
            List<NamedTensor> shard = new ArrayList<>();
            for (int i : shards.get(s)) {
                shard.add(tensorAt.apply(i)); // built when its shard is written, not before
                weightMap.put(names.get(i), file);
                total += sizes.get(i);
            }
            SafeTensorsWriter.write(fs, new Path(dir, file), shard, Map.of("format", "pt"));
        }
        if (shards.size() > 1) {
            ObjectNode index = JSON.createObjectNode();
            index.putObject("metadata").put("total_size", total);
            ObjectNode map = index.putObject("weight_map");
            weightMap.forEach(map::put);
            AtomicFile.write(fs, new Path(dir, INDEX_FILE),
                    (JSON.writeValueAsString(index) + "\n").getBytes(StandardCharsets.UTF_8));
        }
        return total;
    }

    /** Every plain file of the source folder except config.json, the weights and the extra files. */
    private static void copyOtherFiles(Path sourceDir, Configuration conf, FileSystem outFs, Path dir,
            java.util.Set<String> written) throws IOException {
        FileSystem sourceFs = sourceDir.getFileSystem(conf);
        for (FileStatus status : sourceFs.listStatus(sourceDir)) {
            String name = status.getPath().getName();
            if (!status.isFile() || name.equals("config.json") || name.endsWith(".safetensors")
                    || name.equals(INDEX_FILE) || name.startsWith(".") || written.contains(name)) {
                continue;
            }
            if (!FileUtil.copy(sourceFs, status.getPath(), AtomicFile.withoutChecksumFiles(outFs), new Path(dir, name),
                    false, conf)) {
                throw new IOException("could not copy " + status.getPath());
            }
        }
    }
}
