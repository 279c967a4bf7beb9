package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.eval.PerplexityReport;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.FusingTensors;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.sparkmoe.tests.ReferenceParity.*;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Our forward pass and eval on a tiny random qwen3_moe and a tiny olmoe against transformers 5.17 itself (float32,
 * eager attention), and the fused expert layout against the per-expert one.
 *
 * <p>How the expected numbers were produced: {@code tests/src/test/resources/reference/make_qwen3_olmoe_reference.py}
 * (run with transformers 5.17.0, torch 2.13.0+cpu) builds both models with transformers, redraws their weights from a
 * seeded generator, saves them with {@code save_pretrained} (per-expert keys) and writes the logits, every hidden
 * state (embeddings, after layers 0..L-2, the final-normed output) and the raw router logits of the MoE layers on
 * 3 × 16 random tokens, layer 0's experts as transformers holds them fused in memory, and the summed NLL of the test
 * split of sysadmin.txt in windows of 64 tokens (bundled tokenizer, no special tokens). qwen3-moe-tiny: head_dim 12 ≠
 * 32/4, per-head q/k norms, q/k/v/o biases, layer 1 dense, norm_topk_prob true, tied embeddings. olmoe-tiny: q/k norms
 * over the whole projections with 2 KV heads, clip_qkv 1.5, norm_topk_prob false.
 */
class Qwen3OlmoeParityTest {
    private static JavaSparkContext sc;

    @BeforeAll
    static void startSpark() {
        sc = SparkContexts.start("qwen3-olmoe-parity-test", "local[2]");
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny"})
    void logitsHiddenStatesAndRouterLogitsMatchTransformers(String name) {
        MoeTransformer model = load(folder(name));
        ModelConfig c = model.config();
        try (SafeTensorsFile ref = reference(name)) {
            ForwardOutput ours = model.forward(tokens(ref.readLongs("input_ids")), c.num_experts_per_tok, true);
            int t = BATCH * SEQ;
            assertClose(name + " logits", ref.readFloat("logits").reshape(t, c.vocab_size), ours.logits());
            assertEquals(c.num_hidden_layers + 1, ours.hiddenStates().size());
            for (int n = 0; n <= c.num_hidden_layers; n++) {
                assertClose(name + " hidden_states." + n, ref.readFloat("hidden_states." + n).reshape(t, c.hidden_size),
                        ours.hiddenStates().get(n));
            }
            int moeLayers = 0;
            for (int l = 0; l < c.num_hidden_layers; l++) {
                moeLayers += c.isMoeLayer(l) ? 1 : 0;
            }
            assertEquals(moeLayers, ours.routerLogits().size());
            for (int n = 0; n < moeLayers; n++) {
                assertTrue(ref.has("router_logits." + n), name + ": transformers reports router_logits." + n);
                assertClose(name + " router_logits." + n, ref.readFloat("router_logits." + n), ours.routerLogits().get(n));
            }
            assertFalse(ref.has("router_logits." + moeLayers), name + ": transformers reports MoE layers only");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny"})
    void evalTestSplitPerplexityMatchesTransformers(String name) {
        try (SafeTensorsFile ref = reference(name)) {
            PerplexityReport report = eval(sc, folder(name));
            long tokens = ref.readLongs("ppl.tokens")[0];
            double nll = ref.readFloat("ppl.nll_sum").getDouble(0);
            PerplexityReport.Totals ours = report.all();
            assertEquals(tokens, ours.tokens(), name + ": scored tokens (the tokenizer and windows agree)");
            double delta = Math.abs(ours.nllSum() / ours.tokens() - nll / tokens);
            System.out.printf("%s: test perplexity ours %.6f, transformers %.6f, |Δ nll/token| %.3g%n", name,
                    Math.exp(ours.nllSum() / ours.tokens()), Math.exp(nll / tokens), delta);
            assertTrue(delta <= NLL_PER_TOKEN_TOLERANCE, name + ": |Δ nll/token| " + delta);
        }
    }

    /** transformers' own fused tensors of layer 0 equal our fusing of the per-expert checkpoint, bit for bit. */
    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny"})
    void fusedOrientationIsTransformers(String name) {
        org.apache.hadoop.fs.Path dir = new org.apache.hadoop.fs.Path(folder(name).toUri());
        ModelConfig c = ModelFolder.readConfig(dir, new Configuration());
        try (Checkpoint checkpoint = Checkpoint.open(dir, new Configuration()); SafeTensorsFile ref = reference(name)) {
            FusingTensors fused = FusingTensors.of(checkpoint, c);
            assertArrayEquals(ref.readFloat("fused.gate_up_proj").data().asFloat(),
                    fused.readFloat(FusedExperts.gateUp(0)).data().asFloat(), name + " gate_up_proj");
            assertArrayEquals(ref.readFloat("fused.down_proj").data().asFloat(),
                    fused.readFloat(FusedExperts.down(0)).data().asFloat(), name + " down_proj");
        }
    }

    /** The same model written with fused experts gives the same logits and the same eval report, bit for bit. */
    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny"})
    void fusedCheckpointEvaluatesBitIdentically(String name, @TempDir Path tmp) throws Exception {
        Configuration conf = new Configuration();
        org.apache.hadoop.fs.Path dir = new org.apache.hadoop.fs.Path(folder(name).toUri());
        Path fusedDir = tmp.resolve("fused");
        ModelConfig c = ModelFolder.readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            FusingTensors fused = FusingTensors.of(checkpoint, c);
            List<String> names = new ArrayList<>(ModelSchema.expected(c).keySet());
            if (c.tie_word_embeddings && !checkpoint.has("lm_head.weight")) {
                names.remove("lm_head.weight");
            }
            CheckpointFolderWriter.write(dir, c.jsonCopy(), fused, fused.names(names), Map.of(),
                    new org.apache.hadoop.fs.Path(fusedDir.toUri()), conf, CheckpointFolderWriter.DEFAULT_SHARD_BYTES, null);
        }
        try (SafeTensorsFile written = SafeTensorsFile.open(fusedDir.resolve("model.safetensors"))) {
            assertTrue(written.has(FusedExperts.gateUp(0)) && written.has(FusedExperts.down(0)));
            assertFalse(written.has("model.layers.0.mlp.experts.0.gate_proj.weight"), "no per-expert keys left");
        }
        try (SafeTensorsFile ref = reference(name)) {
            int[][] tokens = tokens(ref.readLongs("input_ids"));
            assertArrayEquals(load(folder(name)).logits(tokens).data().asFloat(),
                    load(fusedDir).logits(tokens).data().asFloat(), name + ": logits");
        }
        assertEquals(eval(sc, folder(name)).toJson().replace(folder(name).toUri().toString(), "MODEL"),
                eval(sc, fusedDir).toJson().replace(fusedDir.toUri().toString(), "MODEL"), name + ": eval report");
    }

}
