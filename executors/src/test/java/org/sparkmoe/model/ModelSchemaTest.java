package org.sparkmoe.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointFormatException;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

class ModelSchemaTest {

    /** A checkpoint held in memory. */
    private static final class MapSource implements TensorSource {
        final Map<String, INDArray> tensors;

        MapSource(Map<String, INDArray> tensors) {
            this.tensors = tensors;
        }

        @Override
        public boolean has(String name) {
            return tensors.containsKey(name);
        }

        @Override
        public long[] shape(String name) {
            return tensors.get(name).shape();
        }

        @Override
        public INDArray readFloat(String name) {
            return tensors.get(name);
        }

        @Override
        public String describe() {
            return "in-memory checkpoint";
        }
    }

    private static String mixtralJson() {
        try (InputStream in = ModelSchemaTest.class.getResourceAsStream("/config/mixtral-tiny.json")) {
            if (in == null) {
                throw new IllegalStateException("test resource /config/mixtral-tiny.json not on the classpath");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static ModelConfig mixtral() {
        return ModelConfig.parse(mixtralJson(), "mixtral-tiny/config.json");
    }

    private static ModelConfig qwen(boolean tie) {
        String json = "{\"model_type\": \"qwen2_moe\", \"vocab_size\": 50, \"hidden_size\": 16,"
                + " \"intermediate_size\": 24, \"moe_intermediate_size\": 8, \"shared_expert_intermediate_size\": 12,"
                + " \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                + " \"num_experts\": 3, \"num_experts_per_tok\": 2, \"rms_norm_eps\": 1e-6,"
                + " \"max_position_embeddings\": 64, \"rope_theta\": 10000.0, \"mlp_only_layers\": [1],"
                + " \"tie_word_embeddings\": " + tie + "}";
        return ModelConfig.parse(json, "qwen/config.json");
    }

    /** Every tensor the schema expects, as zeros of the expected shape. */
    private static Map<String, INDArray> complete(ModelConfig c) {
        Map<String, INDArray> m = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> e : ModelSchema.expected(c).entrySet()) {
            m.put(e.getKey(), Nd4j.create(DataType.FLOAT, e.getValue()));
        }
        return m;
    }

    @Test
    void completeMixtralCheckpointPasses() {
        ModelConfig c = mixtral();
        assertDoesNotThrow(() -> ModelSchema.check(c, new MapSource(complete(c))));
    }

    @Test
    void mixtralShapesFollowConfig() {
        Map<String, long[]> s = ModelSchema.expected(mixtral());
        // D=128, heads 4 × head_dim 32, kv heads 2, E=8, I=256, V=1024, L=4
        assertArrayEquals(new long[] {1024, 128}, s.get("model.embed_tokens.weight"));
        assertArrayEquals(new long[] {128, 128}, s.get("model.layers.0.self_attn.q_proj.weight"));
        assertArrayEquals(new long[] {64, 128}, s.get("model.layers.0.self_attn.k_proj.weight"));
        assertArrayEquals(new long[] {64, 128}, s.get("model.layers.3.self_attn.v_proj.weight"));
        assertArrayEquals(new long[] {128, 128}, s.get("model.layers.3.self_attn.o_proj.weight"));
        assertArrayEquals(new long[] {8, 128}, s.get("model.layers.2.block_sparse_moe.gate.weight"));
        assertArrayEquals(new long[] {256, 128}, s.get("model.layers.1.block_sparse_moe.experts.7.w1.weight"));
        assertArrayEquals(new long[] {256, 128}, s.get("model.layers.1.block_sparse_moe.experts.7.w3.weight"));
        assertArrayEquals(new long[] {128, 256}, s.get("model.layers.1.block_sparse_moe.experts.7.w2.weight"));
        assertArrayEquals(new long[] {128}, s.get("model.norm.weight"));
        assertArrayEquals(new long[] {1024, 128}, s.get("lm_head.weight"));
        assertFalse(s.containsKey("model.layers.0.self_attn.q_proj.bias"), "Mixtral has no q/k/v bias");
        // 1 embed + 4 × (2 norms + 4 attn + 1 router + 8 × 3 experts) + final norm + lm_head
        assertEquals(1 + 4 * (2 + 4 + 1 + 24) + 2, s.size());
    }

    @Test
    void cpFormHoldsThreeFactorsPerProjectionInsteadOfTheExperts() {
        ModelConfig c = ModelConfig.parse(mixtralJson().replaceFirst("\\{",
                "{\"low_rank_experts_rank\": 40, \"low_rank_experts_form\": \"cp\","), "cp/config.json");
        Map<String, long[]> s = ModelSchema.expected(c);
        // E=8, D=128, I=256, R=40: U_N [E, R], U_I [in, R], U_O [out, R]
        assertArrayEquals(new long[] {8, 40}, s.get("model.layers.1.block_sparse_moe.experts.w1.cp_n"));
        assertArrayEquals(new long[] {128, 40}, s.get("model.layers.1.block_sparse_moe.experts.w1.cp_in"));
        assertArrayEquals(new long[] {256, 40}, s.get("model.layers.1.block_sparse_moe.experts.w3.cp_out"));
        assertArrayEquals(new long[] {256, 40}, s.get("model.layers.3.block_sparse_moe.experts.w2.cp_in"));
        assertArrayEquals(new long[] {128, 40}, s.get("model.layers.3.block_sparse_moe.experts.w2.cp_out"));
        assertArrayEquals(new long[] {8, 128}, s.get("model.layers.2.block_sparse_moe.gate.weight"));
        assertFalse(s.containsKey("model.layers.1.block_sparse_moe.experts.7.w1.weight"));
        assertFalse(s.containsKey("model.layers.1.block_sparse_moe.shared_base.w1.weight"));
        // 1 embed + 4 × (2 norms + 4 attn + 1 router + 3 projections × 3 factors) + final norm + lm_head
        assertEquals(1 + 4 * (2 + 4 + 1 + 9) + 2, s.size());
        assertDoesNotThrow(() -> ModelSchema.check(c, new MapSource(complete(c))));
    }

    @Test
    void trFormHoldsThreeCoresPerProjectionInsteadOfTheExperts() {
        ModelConfig c = ModelConfig.parse(mixtralJson().replaceFirst("\\{",
                "{\"low_rank_experts_rank\": 5, \"low_rank_experts_form\": \"tr\","), "tr/config.json");
        Map<String, long[]> s = ModelSchema.expected(c);
        // E=8, D=128, I=256, R=5: G_N [R, E, R], G_I [R, in, R], G_O [R, out, R]
        assertArrayEquals(new long[] {5, 8, 5}, s.get("model.layers.1.block_sparse_moe.experts.w1.tr_n"));
        assertArrayEquals(new long[] {5, 128, 5}, s.get("model.layers.1.block_sparse_moe.experts.w1.tr_in"));
        assertArrayEquals(new long[] {5, 256, 5}, s.get("model.layers.1.block_sparse_moe.experts.w3.tr_out"));
        assertArrayEquals(new long[] {5, 256, 5}, s.get("model.layers.3.block_sparse_moe.experts.w2.tr_in"));
        assertArrayEquals(new long[] {5, 128, 5}, s.get("model.layers.3.block_sparse_moe.experts.w2.tr_out"));
        assertFalse(s.containsKey("model.layers.1.block_sparse_moe.experts.w1.cp_n"));
        assertFalse(s.containsKey("model.layers.1.block_sparse_moe.experts.7.w1.weight"));
        // 1 embed + 4 × (2 norms + 4 attn + 1 router + 3 projections × 3 cores) + final norm + lm_head
        assertEquals(1 + 4 * (2 + 4 + 1 + 9) + 2, s.size());
        assertDoesNotThrow(() -> ModelSchema.check(c, new MapSource(complete(c))));
    }

    @Test
    void missingTensorIsNamed() {
        ModelConfig c = mixtral();
        Map<String, INDArray> m = complete(c);
        m.remove("model.layers.0.block_sparse_moe.experts.3.w2.weight");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        assertEquals("in-memory checkpoint: missing tensor model.layers.0.block_sparse_moe.experts.3.w2.weight",
                e.getMessage());
    }

    @Test
    void wrongShapeNamesTensorFoundAndExpected() {
        ModelConfig c = mixtral();
        Map<String, INDArray> m = complete(c);
        m.put("model.layers.2.self_attn.k_proj.weight", Nd4j.create(DataType.FLOAT, 128, 128));
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        String msg = e.getMessage();
        assertTrue(msg.contains("model.layers.2.self_attn.k_proj.weight"), msg);
        assertTrue(msg.contains("has shape [128, 128]"), msg);
        assertTrue(msg.contains("implies [64, 128]"), msg);
        assertTrue(msg.startsWith("in-memory checkpoint"), msg);
    }

    @Test
    void transposedExpertWeightIsRejected() {
        ModelConfig c = mixtral();
        Map<String, INDArray> m = complete(c);
        m.put("model.layers.3.block_sparse_moe.experts.0.w2.weight", Nd4j.create(DataType.FLOAT, 256, 128));
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        assertTrue(e.getMessage().contains("experts.0.w2.weight has shape [256, 128] but config.json implies [128, 256]"),
                e.getMessage());
    }

    @Test
    void untiedModelNeedsLmHead() {
        ModelConfig c = mixtral();
        Map<String, INDArray> m = complete(c);
        m.remove("lm_head.weight");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        assertTrue(e.getMessage().contains("missing tensor lm_head.weight"), e.getMessage());
    }

    @Test
    void tiedEmbeddingsWithoutLmHeadPasses() {
        ModelConfig c = qwen(true);
        Map<String, INDArray> m = complete(c);
        m.remove("lm_head.weight");
        assertDoesNotThrow(() -> ModelSchema.check(c, new MapSource(m)));
    }

    @Test
    void tiedEmbeddingsStillCheckEmbedding() {
        ModelConfig c = qwen(true);
        Map<String, INDArray> m = complete(c);
        m.remove("lm_head.weight");
        m.remove("model.embed_tokens.weight");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        assertTrue(e.getMessage().contains("missing tensor model.embed_tokens.weight"), e.getMessage());
    }

    @Test
    void qwenSchemaHasBiasesSharedExpertAndDenseLayers() {
        ModelConfig c = qwen(false);
        Map<String, long[]> s = ModelSchema.expected(c);
        // D=16, heads 4 × hd 4, kv 2 × 4 = 8; E=3, moe I=8, shared 12, dense I=24; layer 1 is mlp-only
        assertArrayEquals(new long[] {16}, s.get("model.layers.0.self_attn.q_proj.bias"));
        assertArrayEquals(new long[] {8}, s.get("model.layers.0.self_attn.k_proj.bias"));
        assertArrayEquals(new long[] {8}, s.get("model.layers.0.self_attn.v_proj.bias"));
        assertArrayEquals(new long[] {3, 16}, s.get("model.layers.0.mlp.gate.weight"));
        assertArrayEquals(new long[] {8, 16}, s.get("model.layers.0.mlp.experts.2.gate_proj.weight"));
        assertArrayEquals(new long[] {16, 8}, s.get("model.layers.2.mlp.experts.0.down_proj.weight"));
        assertArrayEquals(new long[] {12, 16}, s.get("model.layers.0.mlp.shared_expert.up_proj.weight"));
        assertArrayEquals(new long[] {16, 12}, s.get("model.layers.2.mlp.shared_expert.down_proj.weight"));
        assertArrayEquals(new long[] {1, 16}, s.get("model.layers.2.mlp.shared_expert_gate.weight"));
        assertArrayEquals(new long[] {24, 16}, s.get("model.layers.1.mlp.gate_proj.weight"));
        assertArrayEquals(new long[] {16, 24}, s.get("model.layers.1.mlp.down_proj.weight"));
        assertFalse(s.containsKey("model.layers.1.mlp.gate.weight"), "layer 1 is dense (mlp_only_layers)");
        assertFalse(s.containsKey("model.layers.0.mlp.gate_proj.weight"), "layer 0 is sparse");
        assertDoesNotThrow(() -> ModelSchema.check(c, new MapSource(complete(c))));
    }

    @Test
    void missingQwenSharedExpertGateIsNamed() {
        ModelConfig c = qwen(false);
        Map<String, INDArray> m = complete(c);
        m.remove("model.layers.2.mlp.shared_expert_gate.weight");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        assertTrue(e.getMessage().contains("missing tensor model.layers.2.mlp.shared_expert_gate.weight"),
                e.getMessage());
    }

    @Test
    void glmSchemaHasUngatedSharedExpertsCorrectionBiasAndFirstDenseLayers() {
        ModelConfig c = ModelConfig.parse("{\"model_type\": \"glm4_moe\", \"vocab_size\": 32, \"hidden_size\": 16,"
                + " \"intermediate_size\": 24, \"moe_intermediate_size\": 8, \"n_shared_experts\": 2,"
                + " \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"n_group\": 2, \"topk_group\": 1,"
                + " \"first_k_dense_replace\": 2, \"num_hidden_layers\": 3, \"num_attention_heads\": 4,"
                + " \"num_key_value_heads\": 2, \"head_dim\": 4, \"attention_bias\": true, \"use_qk_norm\": true,"
                + " \"rms_norm_eps\": 1e-5, \"max_position_embeddings\": 64, \"rope_theta\": 10000.0}", "glm.json");
        Map<String, long[]> s = ModelSchema.expected(c);
        // D=16, heads 4 × hd 4, kv 2 × 4 = 8; E=4, moe I=8, shared 2·8 = 16, dense I=24; layers 0 and 1 dense
        assertArrayEquals(new long[] {8}, s.get("model.layers.0.self_attn.k_proj.bias"));
        assertFalse(s.containsKey("model.layers.0.self_attn.o_proj.bias"), "Glm4MoeAttention: o_proj has no bias");
        assertArrayEquals(new long[] {4}, s.get("model.layers.0.self_attn.q_norm.weight"));
        assertArrayEquals(new long[] {24, 16}, s.get("model.layers.1.mlp.gate_proj.weight"));
        assertFalse(s.containsKey("model.layers.1.mlp.gate.weight"), "layer 1 is dense (first_k_dense_replace 2)");
        assertArrayEquals(new long[] {4, 16}, s.get("model.layers.2.mlp.gate.weight"));
        assertArrayEquals(new long[] {4}, s.get("model.layers.2.mlp.gate.e_score_correction_bias"));
        assertArrayEquals(new long[] {16, 16}, s.get("model.layers.2.mlp.shared_experts.up_proj.weight"));
        assertArrayEquals(new long[] {16, 16}, s.get("model.layers.2.mlp.shared_experts.down_proj.weight"));
        assertFalse(s.containsKey("model.layers.2.mlp.shared_expert_gate.weight"), "GLM's shared experts are ungated");
        Map<String, INDArray> m = complete(c);
        assertDoesNotThrow(() -> ModelSchema.check(c, new MapSource(m)));
        m.remove("model.layers.2.mlp.gate.e_score_correction_bias");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, new MapSource(m)));
        assertTrue(e.getMessage().contains("missing tensor model.layers.2.mlp.gate.e_score_correction_bias"),
                e.getMessage());
    }

    /** A checkpoint of {@code config} whose linear weights named by {@code fp8} report F8_E4M3. */
    private static TensorSource withFp8(ModelConfig config, java.util.function.Predicate<String> fp8,
                                        Map<String, long[]> extra) {
        Map<String, long[]> shapes = new LinkedHashMap<>(ModelSchema.expected(config));
        shapes.putAll(extra);
        return new TensorSource() {
            @Override
            public boolean has(String name) {
                return shapes.containsKey(name);
            }

            @Override
            public long[] shape(String name) {
                return shapes.get(name);
            }

            @Override
            public org.sparkmoe.io.DType dtype(String name) {
                return fp8.test(name) ? org.sparkmoe.io.DType.F8_E4M3 : org.sparkmoe.io.DType.BF16;
            }

            @Override
            public INDArray readFloat(String name) {
                throw new UnsupportedOperationException();
            }

            @Override
            public String describe() {
                return "fp8 checkpoint";
            }
        };
    }

    /** FP8 weights need quantization_config, their block scales on the ceil grid, and a decoder layer's linear. */
    @Test
    void fp8WeightsNeedTheirBlockScales() {
        ModelConfig v3 = ModelConfig.parse("{\"model_type\": \"deepseek_v3\", \"vocab_size\": 64, \"hidden_size\": 32,"
                + " \"intermediate_size\": 160, \"moe_intermediate_size\": 16, \"num_hidden_layers\": 2,"
                + " \"num_attention_heads\": 2, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"n_group\": 2,"
                + " \"topk_group\": 1, \"first_k_dense_replace\": 1, \"q_lora_rank\": 8, \"kv_lora_rank\": 8,"
                + " \"qk_nope_head_dim\": 4, \"qk_rope_head_dim\": 4, \"v_head_dim\": 4, \"rms_norm_eps\": 1e-6,"
                + " \"max_position_embeddings\": 16, \"rope_theta\": 10000.0,"
                + " \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\","
                + " \"weight_block_size\": [128, 128]}}", "v3.json");
        String gate = "model.layers.0.mlp.gate_proj.weight";                                   // [160, 32]
        java.util.function.Predicate<String> gateOnly = gate::equals;
        assertDoesNotThrow(() -> ModelSchema.check(v3, withFp8(v3, gateOnly, Map.of(gate + "_scale_inv",
                new long[] {2, 1}))));
        CheckpointFormatException missing = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(v3, withFp8(v3, gateOnly, Map.of())));
        assertTrue(missing.getMessage().contains("missing tensor " + gate + "_scale_inv"), missing.getMessage());
        CheckpointFormatException grid = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(v3, withFp8(v3, gateOnly, Map.of(gate + "_scale_inv", new long[] {1, 1}))));
        assertTrue(grid.getMessage().contains("implies [2, 1]"), grid.getMessage());
        CheckpointFormatException embed = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(v3, withFp8(v3, "model.embed_tokens.weight"::equals, Map.of())));
        assertTrue(embed.getMessage().contains("model.embed_tokens.weight has dtype F8_E4M3"), embed.getMessage());
    }

    /**
     * deepseek_v3 with low_rank_experts_rank (what surgery lowrank writes): each MoE layer holds the shared base and the
     * stacked LoRA experts instead of the E experts, beside its shared experts and the router's correction bias.
     */
    @Test
    void deepseekLowRankSchemaKeepsSharedExpertsAndCorrectionBias() {
        ModelConfig c = ModelConfig.parse("{\"model_type\": \"deepseek_v3\", \"vocab_size\": 64, \"hidden_size\": 32,"
                + " \"intermediate_size\": 48, \"moe_intermediate_size\": 16, \"num_hidden_layers\": 2,"
                + " \"num_attention_heads\": 2, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2, \"n_group\": 2,"
                + " \"topk_group\": 1, \"first_k_dense_replace\": 1, \"q_lora_rank\": 8, \"kv_lora_rank\": 8,"
                + " \"qk_nope_head_dim\": 4, \"qk_rope_head_dim\": 4, \"v_head_dim\": 4, \"rms_norm_eps\": 1e-6,"
                + " \"max_position_embeddings\": 16, \"rope_theta\": 10000.0, \"low_rank_experts_rank\": 3}", "v3.json");
        assertEquals(3, c.low_rank_experts_rank);
        Map<String, long[]> s = ModelSchema.expected(c);
        // D 32, I 16, E 4, R 3, one shared expert of 16
        assertArrayEquals(new long[] {16, 32}, s.get("model.layers.1.mlp.shared_base.gate_proj.weight"));
        assertArrayEquals(new long[] {4, 3, 16}, s.get("model.layers.1.mlp.experts.down_proj.lora_A"));
        assertArrayEquals(new long[] {4, 32, 3}, s.get("model.layers.1.mlp.experts.down_proj.lora_B"));
        assertArrayEquals(new long[] {16, 32}, s.get("model.layers.1.mlp.shared_experts.up_proj.weight"));
        assertArrayEquals(new long[] {4}, s.get("model.layers.1.mlp.gate.e_score_correction_bias"));
        assertFalse(s.containsKey("model.layers.1.mlp.experts.0.gate_proj.weight"), "no per-expert weights");
        assertArrayEquals(new long[] {48, 32}, s.get("model.layers.0.mlp.gate_proj.weight"));
    }
}
