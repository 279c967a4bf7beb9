package org.sparkmoe.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.TensorInfo;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.MoeTransformer;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Random weights streamed into a checkpoint folder through {@link CheckpointFolderWriter}'s streaming entry point, on
 * the tiny fixtures' configs: sharding and the index, the exact BF16 bytes, header offsets against the file length,
 * seeds independent of write order, atomicity when a producer fails, and a forward pass with finite logits.
 */
class RandomWeightsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Configuration conf = new Configuration();

    @TempDir
    java.nio.file.Path tmp;

    private static ObjectNode config(String relative, String torchDtype) {
        Path dir = TinyModels.folder(relative);
        ObjectNode json = ModelFolder.readConfig(dir, new Configuration()).jsonCopy();
        json.put("torch_dtype", torchDtype);
        json.remove("dtype");
        return json;
    }

    private static ModelConfig parse(ObjectNode json) {
        return ModelConfig.parse(json.toString(), "test");
    }

    private Path out(String name) {
        return new Path(tmp.resolve(name).toUri());
    }

    /** name → the tensor's raw bytes, read from the folder's safetensors files by hand (header offsets checked). */
    private Map<String, byte[]> rawTensors(java.nio.file.Path dir, Map<String, String> dtypes) throws IOException {
        Map<String, byte[]> out = new HashMap<>();
        try (Stream<java.nio.file.Path> files = Files.list(dir)) {
            for (java.nio.file.Path file : files.filter(f -> f.toString().endsWith(".safetensors")).toList()) {
                byte[] all = Files.readAllBytes(file);
                long headerLength = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
                assertEquals(0, headerLength % 8, file + ": header padded to 8 bytes");
                JsonNode header = JSON.readTree(new String(all, 8, (int) headerLength, StandardCharsets.UTF_8));
                long expectedBegin = 0;
                long dataStart = 8 + headerLength;
                List<Map.Entry<String, JsonNode>> entries = new ArrayList<>();
                header.fields().forEachRemaining(entries::add);
                entries.sort((a, b) -> Long.compare(a.getValue().path("data_offsets").path(0).asLong(),
                        b.getValue().path("data_offsets").path(0).asLong()));
                for (Map.Entry<String, JsonNode> e : entries) {
                    if (e.getKey().equals("__metadata__")) {
                        assertEquals("pt", e.getValue().get("format").asText());
                        continue;
                    }
                    long begin = e.getValue().get("data_offsets").get(0).asLong();
                    long end = e.getValue().get("data_offsets").get(1).asLong();
                    assertEquals(expectedBegin, begin, e.getKey() + ": contiguous offsets");
                    long elements = 1;
                    for (JsonNode d : e.getValue().get("shape")) {
                        elements *= d.asLong();
                    }
                    String dtype = e.getValue().get("dtype").asText();
                    assertEquals(elements * (dtype.equals("F32") ? 4 : 2), end - begin, e.getKey());
                    dtypes.put(e.getKey(), dtype);
                    byte[] data = new byte[(int) (end - begin)];
                    System.arraycopy(all, (int) (dataStart + begin), data, 0, data.length);
                    out.put(e.getKey(), data);
                    expectedBegin = end;
                }
                assertEquals(all.length, dataStart + expectedBegin, file + ": the data ends where the file ends");
            }
        }
        return out;
    }

    @Test
    void shardedBf16FolderWithExactBytesAndIndex() throws IOException {
        ObjectNode json = config(TinyModels.MIXTRAL, "bfloat16");
        ModelConfig config = parse(json);
        List<NamedTensor> tensors = RandomWeights.tensors(config, DType.BF16, 42, 0.02);
        assertEquals(new ArrayList<>(ModelSchema.expected(config).keySet()),
                tensors.stream().map(NamedTensor::name).toList());
        long maxShard = 300_000;
        Path dir = out("synth");
        long total = CheckpointFolderWriter.write(json, tensors, Map.of("tokenizer.json", "{}".getBytes()), dir, conf,
                maxShard);
        assertEquals(2 * ModelSchema.parameterCount(config), total);

        java.nio.file.Path local = tmp.resolve("synth");
        JsonNode index = JSON.readTree(local.resolve("model.safetensors.index.json").toFile());
        assertEquals(total, index.get("metadata").get("total_size").asLong());
        Map<String, String> weightMap = new HashMap<>();
        index.get("weight_map").fields().forEachRemaining(e -> weightMap.put(e.getKey(), e.getValue().asText()));
        assertEquals(ModelSchema.expected(config).keySet(), weightMap.keySet());
        long shards = weightMap.values().stream().distinct().count();
        assertTrue(shards > 5, shards + " shards");
        String last = String.format("model-%05d-of-%05d.safetensors", shards, shards);
        assertTrue(Files.exists(local.resolve(last)), last);
        for (String file : weightMap.values().stream().distinct().toList()) {
            long tensorsBytes = 0;
            int count = 0;
            for (NamedTensor t : tensors) {
                if (weightMap.get(t.name()).equals(file)) {
                    tensorsBytes += t.byteLength();
                    count++;
                }
            }
            assertTrue(tensorsBytes <= maxShard || count == 1, file + " holds " + tensorsBytes + " bytes");
        }
        assertEquals("{}", Files.readString(local.resolve("tokenizer.json")));
        assertEquals("bfloat16", JSON.readTree(local.resolve("config.json").toFile()).get("torch_dtype").asText());

        Map<String, String> dtypes = new HashMap<>();
        Map<String, byte[]> raw = rawTensors(local, dtypes);
        assertEquals(weightMap.keySet(), raw.keySet());
        assertTrue(dtypes.values().stream().allMatch("BF16"::equals), dtypes.toString());
        // norms are exactly 1 (bf16 0x3f80)
        ByteBuffer norm = ByteBuffer.wrap(raw.get("model.norm.weight")).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < norm.capacity(); i += 2) {
            assertEquals((short) 0x3f80, norm.getShort(i));
        }
        // the first values of a weight, recomputed from the documented recipe: Box–Muller on the chunk's stream
        String name = "model.layers.2.block_sparse_moe.experts.5.w2.weight";
        SplittableRandom random = new SplittableRandom(Seeds.derive(Seeds.derive(42, name), "chunk/0"));
        ByteBuffer w2 = ByteBuffer.wrap(raw.get(name)).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 6; i += 2) {
            double u1 = 1.0 - random.nextDouble();
            double u2 = random.nextDouble();
            double r = 0.02f * StrictMath.sqrt(-2.0 * StrictMath.log(u1));
            assertEquals(bf16((float) (r * StrictMath.cos(2.0 * Math.PI * u2))), w2.getShort(2 * i), "element " + i);
            assertEquals(bf16((float) (r * StrictMath.sin(2.0 * Math.PI * u2))), w2.getShort(2 * i + 2));
        }
        // and the whole tensor looks like normal(0, 0.02)
        double sum = 0;
        double squares = 0;
        int n = w2.capacity() / 2;
        for (int i = 0; i < n; i++) {
            float v = Float.intBitsToFloat((w2.getShort(2 * i) & 0xffff) << 16);
            sum += v;
            squares += v * v;
        }
        assertEquals(0, sum / n, 0.001);
        assertEquals(0.02, Math.sqrt(squares / n), 0.0005);

        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            TensorInfo info = checkpoint.info(name);
            assertEquals(DType.BF16, info.dtype());
            ModelSchema.check(config, checkpoint);
        }
    }

    /** bf16 of a float by truncation plus round-to-nearest-even, written out independently of the encoder. */
    private static short bf16(float v) {
        int bits = Float.floatToRawIntBits(v);
        int lower = bits & 0xffff;
        int upper = bits >>> 16;
        if (lower > 0x8000 || lower == 0x8000 && (upper & 1) == 1) {
            upper++;
        }
        return (short) upper;
    }

    @Test
    void bytesDependOnSeedAndNameNotOnWriteOrderOrDtypeOfOtherTensors() throws IOException {
        ObjectNode json = config(TinyModels.QWEN, "float32");
        ModelConfig config = parse(json);
        List<NamedTensor> forward = RandomWeights.tensors(config, DType.F32, 7, 0.02);
        List<NamedTensor> reversed = new ArrayList<>(RandomWeights.tensors(config, DType.F32, 7, 0.02));
        Collections.reverse(reversed);
        CheckpointFolderWriter.write(json, forward, Map.of(), out("a"), conf, Long.MAX_VALUE);
        CheckpointFolderWriter.write(json, reversed, Map.of(), out("b"), conf, 5_000);
        CheckpointFolderWriter.write(json, RandomWeights.tensors(config, DType.F32, 8, 0.02), Map.of(), out("c"),
                conf, Long.MAX_VALUE);
        assertTrue(Files.exists(tmp.resolve("a/model.safetensors")));
        assertFalse(Files.exists(tmp.resolve("a/model.safetensors.index.json")));
        Map<String, byte[]> a = rawTensors(tmp.resolve("a"), new HashMap<>());
        Map<String, byte[]> b = rawTensors(tmp.resolve("b"), new HashMap<>());
        Map<String, byte[]> c = rawTensors(tmp.resolve("c"), new HashMap<>());
        assertEquals(a.keySet(), b.keySet());
        for (String name : a.keySet()) {
            assertArrayEquals(a.get(name), b.get(name), name);
        }
        String q = "model.layers.0.self_attn.q_proj.weight";
        assertFalse(java.util.Arrays.equals(a.get(q), c.get(q)), "another seed, other bytes");
        ByteBuffer bias = ByteBuffer.wrap(a.get("model.layers.0.self_attn.q_proj.bias"));
        while (bias.hasRemaining()) {
            assertEquals(0, bias.get());
        }
        // two tensors of the same shape get different streams
        assertFalse(java.util.Arrays.equals(a.get("model.layers.0.self_attn.q_proj.weight"),
                a.get("model.layers.0.self_attn.o_proj.weight")));
    }

    @Test
    void randomModelsGiveFiniteLogits() {
        for (String fixture : List.of(TinyModels.MIXTRAL, TinyModels.QWEN)) {
            ObjectNode json = config(fixture, "bfloat16");
            ModelConfig config = parse(json);
            Path dir = out("forward-" + fixture.hashCode());
            CheckpointFolderWriter.write(json, RandomWeights.tensors(config, DType.BF16, 42, 0.02), Map.of(), dir,
                    conf, Long.MAX_VALUE);
            try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
                MoeTransformer model = ModelLoader.load(ModelFolder.readConfig(dir, conf), checkpoint,
                        new Nd4jGroupedGemm(), DataType.FLOAT);
                int[][] tokens = {{1, 5, 9, 2, 7, 3, 11, 4}};
                INDArray logits = model.forward(tokens, config.num_experts_per_tok, false).logits(); // [T, V]
                assertEquals(config.vocab_size, logits.size(1));
                for (float v : logits.data().asFloat()) {
                    assertTrue(Float.isFinite(v), fixture + ": logit " + v);
                }
                assertNotEquals(0.0, logits.stdNumber().doubleValue(), fixture + ": logits vary");
            }
        }
    }

    @Test
    void aFailingProducerLeavesNoFolder() throws IOException {
        ObjectNode json = config(TinyModels.QWEN, "bfloat16");
        ModelConfig config = parse(json);
        for (boolean shortData : List.of(false, true)) {
            List<NamedTensor> tensors = new ArrayList<>(RandomWeights.tensors(config, DType.BF16, 1, 0.02));
            int victim = tensors.size() - 3;
            NamedTensor original = tensors.get(victim);
            tensors.set(victim, new NamedTensor.Streamed(original.name(), original.dtype(), original.shape(), o -> {
                o.write(new byte[10]);
                if (!shortData) {
                    throw new IOException("disk full");
                }
            }));
            Path dir = out("failed");
            RuntimeException e = assertThrows(RuntimeException.class,
                    () -> CheckpointFolderWriter.write(json, tensors, Map.of(), dir, conf, 4_000));
            String message = e instanceof UncheckedIOException ? e.getMessage() : e.getMessage();
            assertTrue(shortData ? message.contains(original.name()) && message.contains("needs "
                    + original.byteLength() + " bytes, its data had 10") : message.contains("disk full"), message);
            try (Stream<java.nio.file.Path> left = Files.list(tmp)) {
                assertEquals(List.of(), left.toList(), "nothing left behind");
            }
        }
    }

    @Test
    void theSchemaIsCheckedBeforeAnythingIsWritten() throws IOException {
        ObjectNode json = config(TinyModels.MIXTRAL, "bfloat16");
        List<NamedTensor> tensors = new ArrayList<>(RandomWeights.tensors(parse(json), DType.BF16, 1, 0.02));
        tensors.remove(3);
        Path dir = out("bad");
        RuntimeException e = assertThrows(RuntimeException.class,
                () -> CheckpointFolderWriter.write(json, tensors, Map.of(), dir, conf, Long.MAX_VALUE));
        assertTrue(e.getMessage().contains("missing tensor"), e.getMessage());
        try (Stream<java.nio.file.Path> left = Files.list(tmp)) {
            assertFalse(left.iterator().hasNext());
        }
        assertThrows(IllegalArgumentException.class,
                () -> RandomWeights.tensors(parse(json), DType.I64, 1, 0.02));
        assertThrows(IllegalArgumentException.class,
                () -> RandomWeights.tensors(parse(json), DType.BF16, 1, 0));
    }
}
