package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
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
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.routing.Routes;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.sparkmoe.tests.ReferenceParity.*;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Our forward pass and eval on a tiny random glm4_moe against transformers 5.17 itself (float32, eager attention).
 *
 * <p>How the expected numbers were produced: {@code tests/src/test/resources/reference/make_glm4_moe_reference.py}
 * (transformers 5.17.0, torch 2.13.0+cpu) builds the model with transformers, redraws its weights and each router's
 * e_score_correction_bias from a seeded generator, saves it with {@code save_pretrained} (per-expert keys) and writes
 * the logits, every hidden state and, from a forward hook on each MoE layer's {@code mlp.gate} (transformers returns
 * no router logits for glm4_moe), the raw router logits, the chosen experts and their routing weights on 3 × 16 random
 * tokens, and the summed NLL of the test split of sysadmin.txt in windows of 64 tokens. glm4-moe-tiny: head_dim 16
 * with partial_rotary_factor 0.5, per-head q/k norms, q/k/v biases and no o bias, GQA 4/2, layer 0 dense
 * (first_k_dense_replace 1), 8 routed experts in 2 groups of which 1 is kept (ranked by the sum of their top-2
 * corrected scores), top-2, sigmoid scores with a correction bias that changes 34 of the 96 token routings (the group
 * limit changes 61), norm_topk_prob, routed_scaling_factor 2.5, 1 ungated shared expert.
 */
class Glm4MoeParityTest {
    private static final String NAME = "glm4-moe-tiny";
    private static JavaSparkContext sc;

    @BeforeAll
    static void startSpark() {
        sc = SparkContexts.start("glm4-moe-parity-test", "local[2]");
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    @Test
    void logitsHiddenStatesAndRoutingMatchTransformers() {
        MoeTransformer model = load(folder(NAME));
        ModelConfig c = model.config();
        try (SafeTensorsFile ref = reference(NAME)) {
            ForwardOutput ours = model.forward(tokens(ref.readLongs("input_ids")), c.num_experts_per_tok, true);
            int t = BATCH * SEQ;
            assertClose("logits", ref.readFloat("logits").reshape(t, c.vocab_size), ours.logits());
            assertEquals(c.num_hidden_layers + 1, ours.hiddenStates().size());
            for (int n = 0; n <= c.num_hidden_layers; n++) {
                assertClose("hidden_states." + n, ref.readFloat("hidden_states." + n).reshape(t, c.hidden_size),
                        ours.hiddenStates().get(n));
            }
            List<DecoderLayer> moe = model.layers().stream().filter(DecoderLayer::isMoe).toList();
            assertEquals(2, moe.size(), "layer 0 dense (first_k_dense_replace 1), layers 1 and 2 MoE");
            assertEquals(moe.size(), ours.routerLogits().size());
            for (int n = 0; n < moe.size(); n++) {
                INDArray logits = ours.routerLogits().get(n);                                      // [T, E]
                assertClose("router_logits." + n, ref.readFloat("router_logits." + n), logits);
                Routes routes = moe.get(n).moe().router().route(logits, moe.get(n).moe().options().rule());
                long[] experts = ref.readLongs("router_experts." + n);                              // [T·K] ascending
                INDArray weights = ref.readFloat("router_weights." + n);                            // [T, K]
                int k = c.num_experts_per_tok;
                double maxDiff = 0;
                for (int token = 0; token < t; token++) {
                    int[] chosen = new int[k];
                    double[] w = new double[c.num_experts];
                    for (int j = 0; j < k; j++) {
                        chosen[j] = routes.expert(token, j);
                        w[chosen[j]] = routes.weight(token, j);
                    }
                    Arrays.sort(chosen);
                    for (int j = 0; j < k; j++) {
                        assertEquals(experts[token * k + j], chosen[j], "layer " + n + " token " + token + " expert " + j);
                        maxDiff = Math.max(maxDiff, Math.abs(w[chosen[j]] - weights.getDouble(token, j)));
                    }
                }
                System.out.printf("router_weights.%d: max |Δ| = %.3g%n", n, maxDiff);
                assertTrue(maxDiff <= TOLERANCE, "router_weights." + n + ": max |Δ| " + maxDiff);
            }
        }
    }

    @Test
    void evalTestSplitPerplexityMatchesTransformers() {
        try (SafeTensorsFile ref = reference(NAME)) {
            PerplexityReport report = eval(sc, folder(NAME));
            long tokens = ref.readLongs("ppl.tokens")[0];
            double nll = ref.readFloat("ppl.nll_sum").getDouble(0);
            PerplexityReport.Totals ours = report.all();
            assertEquals(tokens, ours.tokens(), "scored tokens (the tokenizer and windows agree)");
            double delta = Math.abs(ours.nllSum() / ours.tokens() - nll / tokens);
            System.out.printf("%s: test perplexity ours %.6f, transformers %.6f, |Δ nll/token| %.3g%n", NAME,
                    Math.exp(ours.nllSum() / ours.tokens()), Math.exp(nll / tokens), delta);
            assertTrue(delta <= NLL_PER_TOKEN_TOLERANCE, "|Δ nll/token| " + delta);
        }
    }

    /** The same model written with fused experts (transformers 5's layout) gives the same logits, bit for bit. */
    @Test
    void fusedCheckpointEvaluatesBitIdentically(@TempDir Path tmp) throws Exception {
        Configuration conf = new Configuration();
        org.apache.hadoop.fs.Path dir = new org.apache.hadoop.fs.Path(folder(NAME).toUri());
        Path fusedDir = tmp.resolve("fused");
        ModelConfig c = ModelFolder.readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            FusingTensors fused = FusingTensors.of(checkpoint, c);
            List<String> names = new ArrayList<>(ModelSchema.expected(c).keySet());
            CheckpointFolderWriter.write(dir, c.jsonCopy(), fused, fused.names(names), Map.of(),
                    new org.apache.hadoop.fs.Path(fusedDir.toUri()), conf, CheckpointFolderWriter.DEFAULT_SHARD_BYTES, null);
        }
        try (SafeTensorsFile written = SafeTensorsFile.open(fusedDir.resolve("model.safetensors"))) {
            assertTrue(written.has(FusedExperts.gateUp(1)) && written.has(FusedExperts.down(1)));
            assertFalse(written.has("model.layers.1.mlp.experts.0.gate_proj.weight"), "no per-expert keys left");
            assertTrue(written.has("model.layers.1.mlp.gate.e_score_correction_bias"));
        }
        try (SafeTensorsFile ref = reference(NAME)) {
            int[][] tokens = tokens(ref.readLongs("input_ids"));
            assertArrayEquals(load(folder(NAME)).logits(tokens).data().asFloat(),
                    load(fusedDir).logits(tokens).data().asFloat(), "logits");
        }
    }

}
