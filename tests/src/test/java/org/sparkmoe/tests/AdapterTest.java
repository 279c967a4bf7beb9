package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.adapter.AdapterConfig;
import org.sparkmoe.adapter.MergedCheckpoint;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.driver.SparkMoe;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Applying a PEFT adapter: eval/logits with --adapter equal the merged checkpoint, the merged folder is a complete
 * Hugging Face checkpoint, and a bad adapter fails the CLI with one line.
 */
class AdapterTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path tmp;
    private static Path adapter;
    private static Path merged;

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    /** A random non-zero adapter (r 4, alpha 8, all projections, routers trained) of the tiny Mixtral, merged. */
    @BeforeAll
    static void writeAdapterAndMerge() {
        ModelConfig config = ModelFolder.readConfig(hadoop(Fixtures.tinyModel()), CONF);
        AdapterConfig adapterConfig = new AdapterConfig(4, 8, List.of(Projection.GATE, Projection.UP, Projection.DOWN),
                true, Fixtures.tinyModel().toString());
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        Nd4j.getRandom().setSeed(2024);
        try (Checkpoint base = Checkpoint.open(hadoop(Fixtures.tinyModel()), CONF)) {
            PeftAdapter.expectedState(config, adapterConfig).forEach((key, shape) -> state.put(key,
                    key.endsWith(".gate.weight")
                            ? base.readFloat(key).addi(Nd4j.randn(DataType.FLOAT, shape).muli(0.5)) // a moved router
                            : Nd4j.randn(DataType.FLOAT, shape).muli(0.05)));
        }
        adapter = tmp.resolve("adapter");
        PeftAdapter.of(config, adapterConfig, state).write(hadoop(adapter), CONF);
        merged = tmp.resolve("merged");
        MergedCheckpoint.write(hadoop(Fixtures.tinyModel()), hadoop(adapter), hadoop(merged), CONF);
    }

    private static int sparkmoe(StringWriter err, String... args) {
        return SparkMoe.execute(new PrintWriter(err, true), args);
    }

    private static JsonNode eval(Path model, Path adapterDir, String name) throws Exception {
        Path out = tmp.resolve(name + ".json");
        List<String> args = new ArrayList<>(List.of("eval", "--model", model.toString(),
                "--data", Fixtures.corpus("sysadmin.txt").toString(), "--window", "128", "--master", "local[2]",
                "--out", out.toString()));
        if (adapterDir != null) {
            args.addAll(List.of("--adapter", adapterDir.toString()));
        }
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, args.toArray(String[]::new)), err.toString());
        return JSON.readTree(out.toFile()).get("all");
    }

    @Test
    void evalWithAdapterEqualsEvalOfTheMergedCheckpoint() throws Exception {
        JsonNode withAdapter = eval(Fixtures.tinyModel(), adapter, "with-adapter");
        JsonNode ofMerged = eval(merged, null, "merged");
        JsonNode base = eval(Fixtures.tinyModel(), null, "base");
        double a = withAdapter.get("ppl").asDouble();
        double m = ofMerged.get("ppl").asDouble();
        double b = base.get("ppl").asDouble();
        System.err.printf("AdapterTest: ppl base %.6f, model+adapter %.9f, merged %.9f, |Δ|/ppl %.3g%n", b, a, m,
                Math.abs(a - m) / m);
        assertEquals(withAdapter.get("tokens").asLong(), ofMerged.get("tokens").asLong());
        assertTrue(Math.abs(a - m) / m <= 1e-4, "model+adapter ppl " + a + " vs merged ppl " + m);
        assertTrue(Math.abs(a - b) / b > 1e-2, "the adapter should change the perplexity: " + a + " vs base " + b);
    }

    @Test
    void logitsWithAdapterEqualLogitsOfTheMergedCheckpoint() {
        Path withAdapter = tmp.resolve("logits-adapter.safetensors");
        Path ofMerged = tmp.resolve("logits-merged.safetensors");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "logits", "--model", Fixtures.tinyModel().toString(), "--adapter",
                adapter.toString(), "--input-ids", Fixtures.reference().toString(), "--out", withAdapter.toString()), err.toString());
        assertEquals(0, sparkmoe(err, "logits", "--model", merged.toString(), "--input-ids", Fixtures.reference().toString(),
                "--out", ofMerged.toString()), err.toString());
        try (SafeTensorsFile x = SafeTensorsFile.open(withAdapter); SafeTensorsFile y = SafeTensorsFile.open(ofMerged);
             SafeTensorsFile reference = SafeTensorsFile.open(Fixtures.reference())) {
            INDArray logits = x.readFloat("logits");
            double scale = logits.amaxNumber().doubleValue();
            assertTrue(logits.sub(y.readFloat("logits")).amaxNumber().doubleValue() <= 1e-5 * scale);
            assertTrue(logits.sub(reference.readFloat("logits")).amaxNumber().doubleValue() > 1e-2,
                    "the adapter should change the logits");
        }
    }

    @Test
    void mergedFolderIsACompleteCheckpoint() throws Exception {
        for (String file : List.of("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "generation_config.json")) {
            assertTrue(Files.isRegularFile(merged.resolve(file)), file);
        }
        assertEquals(Files.readString(Fixtures.tinyModel().resolve("tokenizer.json")),
                Files.readString(merged.resolve("tokenizer.json")));
        assertEquals("float32", JSON.readTree(merged.resolve("config.json").toFile()).get("dtype").asText());
        try (Checkpoint source = Checkpoint.open(hadoop(Fixtures.tinyModel()), CONF);
             Checkpoint out = Checkpoint.open(hadoop(merged), CONF)) {
            assertEquals(List.copyOf(source.names()), List.copyOf(out.names()));
            assertEquals(source.readFloat("model.layers.1.self_attn.q_proj.weight"),
                    out.readFloat("model.layers.1.self_attn.q_proj.weight"));
            assertNotEquals(source.readFloat("model.layers.1.block_sparse_moe.experts.2.w2.weight"),
                    out.readFloat("model.layers.1.block_sparse_moe.experts.2.w2.weight"));
        }
        StringWriter err = new StringWriter();
        assertEquals(1, sparkmoe(err, "merge", "--model", Fixtures.tinyModel().toString(), "--adapter", adapter.toString(),
                "--out", merged.toString()));
        assertTrue(err.toString().startsWith("merge: error: output checkpoint folder already exists: "), err.toString());
    }

    /** Sharded output (1 MB shards) loads through the index and computes the same logits as the single file. */
    @Test
    void shardedMergeGivesTheSameModel() throws Exception {
        Path sharded = tmp.resolve("merged-sharded");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "merge", "--model", Fixtures.tinyModel().toString(), "--adapter", adapter.toString(),
                "--out", sharded.toString(), "--max-shard-size", "1000000"), err.toString());
        assertTrue(Files.isRegularFile(sharded.resolve("model.safetensors.index.json")));
        Set<String> shardFiles = new TreeSet<>();
        JSON.readTree(sharded.resolve("model.safetensors.index.json").toFile()).get("weight_map")
                .forEach(file -> shardFiles.add(file.asText()));
        assertTrue(shardFiles.size() >= 14, "14.5 MB in 1 MB shards: " + shardFiles); // the largest tensor is 0.5 MB
        String last = String.format("model-%05d-of-%05d.safetensors", shardFiles.size(), shardFiles.size());
        assertTrue(shardFiles.contains(last), shardFiles.toString());
        shardFiles.forEach(file -> assertTrue(Files.isRegularFile(sharded.resolve(file)), file));
        assertTrue(!Files.exists(sharded.resolve("model.safetensors")));
        int[][] tokens = {{1, 5, 9, 200, 7, 3, 1000, 42}};
        MoeTransformer single = ModelFolder.load(hadoop(merged), CONF);
        MoeTransformer shards = ModelFolder.load(hadoop(sharded), CONF);
        assertEquals(single.forward(tokens, 2, false).logits(), shards.forward(tokens, 2, false).logits());
    }

    @Test
    void badAdapterFailsTheCliWithOneLine() throws Exception {
        Path bad = tmp.resolve("bad-adapter");
        Files.createDirectories(bad);
        Files.copy(adapter.resolve(PeftAdapter.WEIGHTS_FILE), bad.resolve(PeftAdapter.WEIGHTS_FILE));
        Files.writeString(bad.resolve(PeftAdapter.CONFIG_FILE),
                Files.readString(adapter.resolve(PeftAdapter.CONFIG_FILE)).replace("\"r\" : 4", "\"r\" : 16"));
        StringWriter err = new StringWriter();
        int rc = sparkmoe(err, "eval", "--model", Fixtures.tinyModel().toString(), "--adapter", bad.toString(),
                "--data", Fixtures.corpus("sysadmin.txt").toString(), "--master", "local[1]");
        assertEquals(1, rc, err.toString());
        assertEquals(1, err.toString().lines().count(), err.toString());
        assertTrue(err.toString().contains("wrong rank: base_model.model.model.layers.0.block_sparse_moe.experts.0.w1"
                + ".lora_A.weight has shape [4, 128], rank 4, but adapter_config.json says r=16"), err.toString());
    }
}
