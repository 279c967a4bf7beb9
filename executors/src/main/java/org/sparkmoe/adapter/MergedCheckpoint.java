package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.FileUtil;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

/**
 * Writes a complete Hugging Face checkpoint folder with a LoRA adapter merged into the expert weights (and a
 * trained router in place of the base router): config.json, every tensor of the source checkpoint in its order,
 * all in float32 (a bf16/fp16 source is widened; config.json's dtype/torch_dtype say float32), as one
 * model.safetensors or, past the shard size, model-0000i-of-0000N.safetensors plus model.safetensors.index.json,
 * and every other file of the source folder (tokenizer, generation config) copied. The folder is built in a
 * hidden sibling and renamed into place once complete, so a reader never sees it half-written.
 */
public final class MergedCheckpoint {
    /** Largest shard written by default: 2 GiB of float32 tensors. */
    public static final long DEFAULT_SHARD_BYTES = 2L << 30;
    private static final String SINGLE_FILE = "model.safetensors";
    private static final String INDEX_FILE = "model.safetensors.index.json";
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private MergedCheckpoint() {
    }

    /** Merges the PEFT adapter folder {@code adapterDir} into the model folder {@code modelDir}, writing {@code outDir}. */
    public static void write(Path modelDir, Path adapterDir, Path outDir, Configuration conf) {
        ModelConfig config = ModelFolder.readConfig(modelDir, conf);
        write(modelDir, PeftAdapter.read(adapterDir, conf, config), outDir, conf, DEFAULT_SHARD_BYTES);
    }

    /**
     * Merges {@code adapter} (of the model in {@code modelDir}) and writes {@code outDir}, which must not exist;
     * shards hold at most {@code maxShardBytes} (a single larger tensor gets a shard of its own).
     */
    public static void write(Path modelDir, PeftAdapter adapter, Path outDir, Configuration conf, long maxShardBytes) {
        if (maxShardBytes < 1) {
            throw new IllegalArgumentException("maxShardBytes must be ≥ 1, got " + maxShardBytes);
        }
        FileSystem fs;
        try {
            fs = outDir.getFileSystem(conf);
            if (fs.exists(outDir)) {
                throw new IllegalArgumentException("merged checkpoint folder already exists: " + outDir);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + outDir + ": " + e.getMessage(), e);
        }
        Path staging = new Path(outDir.getParent(), "." + outDir.getName() + ".tmp-" + UUID.randomUUID());
        try {
            fs.mkdirs(staging);
            writeConfig(fs, new Path(staging, "config.json"), adapter.model());
            try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
                ModelSchema.check(adapter.model(), checkpoint);
                writeTensors(fs, staging, new MergedTensors(checkpoint, adapter), new ArrayList<>(checkpoint.names()),
                        maxShardBytes);
            }
            copyOtherFiles(modelDir, conf, fs, staging);
            if (!fs.rename(staging, outDir)) {
                throw new IOException("could not rename " + staging + " to " + outDir);
            }
        } catch (IOException | RuntimeException e) {
            try {
                fs.delete(staging, true);
            } catch (IOException | RuntimeException cleanup) {
                e.addSuppressed(cleanup);
            }
            if (e instanceof IOException io) {
                throw new UncheckedIOException("writing merged checkpoint " + outDir + ": " + io.getMessage(), io);
            }
            throw (RuntimeException) e;
        }
    }

    /** The source config.json with only the dtype fields that are present set to float32. */
    private static void writeConfig(FileSystem fs, Path target, ModelConfig model) throws IOException {
        ObjectNode json = model.jsonCopy();
        for (String field : List.of("torch_dtype", "dtype")) {
            if (json.has(field)) {
                json.put(field, "float32");
            }
        }
        AtomicFile.write(fs, target, (JSON.writeValueAsString(json) + "\n").getBytes(StandardCharsets.UTF_8));
    }

    private static void writeTensors(FileSystem fs, Path dir, MergedTensors tensors, List<String> names,
            long maxShardBytes) throws IOException {
        List<List<String>> shards = new ArrayList<>();
        long total = 0;
        long shardBytes = 0;
        for (String name : names) {
            long bytes = Float.BYTES * Arrays.stream(tensors.shape(name)).reduce(1, Math::multiplyExact);
            if (shards.isEmpty() || shardBytes + bytes > maxShardBytes && !shards.get(shards.size() - 1).isEmpty()) {
                shards.add(new ArrayList<>());
                shardBytes = 0;
            }
            shards.get(shards.size() - 1).add(name);
            shardBytes += bytes;
            total += bytes;
        }
        Map<String, String> weightMap = new LinkedHashMap<>();
        for (int s = 0; s < shards.size(); s++) {
            String file = shards.size() == 1 ? SINGLE_FILE
                    : String.format("model-%05d-of-%05d.safetensors", s + 1, shards.size());
            List<NamedTensor> shard = new ArrayList<>();
            for (String name : shards.get(s)) {
                shard.add(new NamedTensor.Floats(name, tensors.readFloat(name)));
                weightMap.put(name, file);
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
    }

    /** Every plain file of the source folder except config.json and the weights (tokenizer files and the like). */
    private static void copyOtherFiles(Path modelDir, Configuration conf, FileSystem outFs, Path dir) throws IOException {
        FileSystem sourceFs = modelDir.getFileSystem(conf);
        for (FileStatus status : sourceFs.listStatus(modelDir)) {
            String name = status.getPath().getName();
            if (!status.isFile() || name.equals("config.json") || name.endsWith(".safetensors")
                    || name.equals(INDEX_FILE) || name.startsWith(".")) {
                continue;
            }
            if (!FileUtil.copy(sourceFs, status.getPath(), outFs, new Path(dir, name), false, conf)) {
                throw new IOException("could not copy " + status.getPath());
            }
        }
    }
}
