package org.sparkmoe.model;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The real models' config.json files parse, and the checkpoint {@link ModelSchema} implies for them holds the
 * parameter count their model cards publish (Mixtral-8x7B 46.7B, Qwen1.5-MoE-A2.7B 14.3B, GLM-4.5-Air 106B,
 * Mistral-7B 7.24B, gpt-oss-20b 20.9B, gpt-oss-120b 116.8B, Qwen3-30B-A3B 30.5B, OLMoE-1B-7B 6.92B).
 */
class ModelShapeTest {

    private static ModelConfig parse(ObjectNode json) {
        return ModelConfig.parse(json.toString(), "test");
    }

    @Test
    void parameterCountsMatchThePublishedOnesWithinOnePercent() {
        for (ModelShape shape : ModelShape.values()) {
            long count = ModelSchema.parameterCount(parse(shape.config()));
            double relative = Math.abs(count - shape.publishedParameters()) / shape.publishedParameters();
            assertTrue(relative < 0.01, shape + ": " + count + " parameters, published "
                    + shape.publishedParameters());
        }
        // exact counts, as transformers' sum(p.numel() for p in model.parameters()) gives them
        assertEquals(46_702_792_704L, ModelSchema.parameterCount(parse(ModelShape.MIXTRAL_8X7B.config())));
        assertEquals(7_241_732_096L, ModelSchema.parameterCount(parse(ModelShape.MISTRAL_7B.config())));
        // GLM-4.5-Air: transformers' 106,852,245,504 parameters plus the 45 MoE layers' e_score_correction_bias
        // buffers (128 each), which the checkpoint holds as tensors
        assertEquals(106_852_245_504L + 45 * 128, ModelSchema.parameterCount(parse(ModelShape.GLM_4_5_AIR.config())));
        // transformers 5.17, the model built on the meta device from the shape's config.json
        assertEquals(30_532_122_624L, ModelSchema.parameterCount(parse(ModelShape.QWEN3_30B_A3B.config())));
        assertEquals(6_919_161_856L, ModelSchema.parameterCount(parse(ModelShape.OLMOE_1B_7B.config())));
    }

    @Test
    void theConfigsAreTheRealModels() {
        ModelConfig mixtral = parse(ModelShape.MIXTRAL_8X7B.config());
        assertEquals(ModelConfig.ModelType.MIXTRAL, mixtral.modelType);
        assertEquals(8, mixtral.num_experts);
        assertEquals(2, mixtral.num_experts_per_tok);
        assertEquals(14336, mixtral.expert_intermediate_size);
        assertEquals(32000, mixtral.vocab_size);
        ModelConfig qwen = parse(ModelShape.QWEN1_5_MOE_A2_7B.config());
        assertEquals(ModelConfig.ModelType.QWEN2_MOE, qwen.modelType);
        assertEquals(60, qwen.num_experts);
        assertEquals(4, qwen.num_experts_per_tok);
        assertEquals(1408, qwen.expert_intermediate_size);
        assertEquals(5632, qwen.shared_expert_intermediate_size);
        assertEquals(151936, qwen.vocab_size);
        assertFalse(qwen.norm_topk_prob);
        assertTrue(qwen.qkv_bias);
        ModelConfig glm = parse(ModelShape.GLM_4_5_AIR.config());
        assertEquals(ModelConfig.ModelType.GLM4_MOE, glm.modelType);
        assertEquals(46, glm.num_hidden_layers);
        assertEquals(4096, glm.hidden_size);
        assertEquals(128, glm.num_experts);
        assertEquals(8, glm.num_experts_per_tok);
        assertEquals(1408, glm.expert_intermediate_size);
        assertEquals(1408, glm.shared_expert_intermediate_size, "1 shared expert");
        assertEquals(10944, glm.intermediate_size);
        assertEquals(96, glm.num_attention_heads);
        assertEquals(8, glm.num_key_value_heads);
        assertEquals(128, glm.head_dim);
        assertEquals(64, glm.rotaryDim(), "partial_rotary_factor 0.5");
        assertEquals(151552, glm.vocab_size);
        assertFalse(glm.isMoeLayer(0), "first_k_dense_replace 1");
        assertTrue(glm.isMoeLayer(1));
        assertFalse(glm.routing.groupLimited(), "n_group 1, topk_group 1");
        assertEquals(1.0, glm.routing.routed_scaling_factor());
        assertTrue(glm.norm_topk_prob);
        assertTrue(glm.qkv_bias);
        assertEquals(ModelConfig.QkNorm.NONE, glm.qkNorm);
        ModelConfig mistral = parse(ModelShape.MISTRAL_7B.config());
        assertEquals(ModelConfig.ModelType.MISTRAL, mistral.modelType);
        assertEquals(4096, mistral.sliding_window);
        for (ModelShape shape : new ModelShape[] {ModelShape.GPT_OSS_20B, ModelShape.GPT_OSS_120B}) {
            ModelConfig gptOss = parse(shape.config());
            boolean big = shape == ModelShape.GPT_OSS_120B;
            assertEquals(ModelConfig.ModelType.GPT_OSS, gptOss.modelType);
            assertEquals(big ? 36 : 24, gptOss.num_hidden_layers);
            assertEquals(big ? 128 : 32, gptOss.num_experts);
            assertEquals(4, gptOss.num_experts_per_tok);
            assertEquals(2880, gptOss.hidden_size);
            assertEquals(2880, gptOss.expert_intermediate_size);
            assertEquals(64, gptOss.num_attention_heads);
            assertEquals(8, gptOss.num_key_value_heads);
            assertEquals(64, gptOss.head_dim);
            assertEquals(201088, gptOss.vocab_size);
            assertEquals(128, gptOss.slidingWindow(0));
            assertEquals(null, gptOss.slidingWindow(1));
            assertEquals(32.0, gptOss.rope_scaling.factor());
            assertEquals(4096, gptOss.rope_scaling.original_max_position_embeddings());
            assertFalse(gptOss.rope_scaling.truncate());
            ObjectNode two = shape.config(2, DType.BF16);
            assertEquals(2, two.get("layer_types").size());
            assertFalse(two.has("quantization_config"), "synth writes the experts in bf16, not MXFP4");
        }
        ModelConfig qwen3 = parse(ModelShape.QWEN3_30B_A3B.config());
        assertEquals(ModelConfig.ModelType.QWEN3_MOE, qwen3.modelType);
        assertEquals(48, qwen3.num_hidden_layers);
        assertEquals(2048, qwen3.hidden_size);
        assertEquals(128, qwen3.num_experts);
        assertEquals(8, qwen3.num_experts_per_tok);
        assertEquals(768, qwen3.expert_intermediate_size);
        assertEquals(32, qwen3.num_attention_heads);
        assertEquals(4, qwen3.num_key_value_heads);
        assertEquals(128, qwen3.head_dim);
        assertEquals(151936, qwen3.vocab_size);
        assertEquals(ModelConfig.QkNorm.PER_HEAD, qwen3.qkNorm);
        assertTrue(qwen3.norm_topk_prob);
        assertFalse(qwen3.qkv_bias);
        for (int l = 0; l < 48; l++) {
            assertTrue(qwen3.isMoeLayer(l), "mlp_only_layers [], decoder_sparse_step 1: layer " + l);
        }
        ModelConfig olmoe = parse(ModelShape.OLMOE_1B_7B.config());
        assertEquals(ModelConfig.ModelType.OLMOE, olmoe.modelType);
        assertEquals(16, olmoe.num_hidden_layers);
        assertEquals(64, olmoe.num_experts);
        assertEquals(8, olmoe.num_experts_per_tok);
        assertEquals(1024, olmoe.expert_intermediate_size);
        assertEquals(16, olmoe.num_key_value_heads);
        assertEquals(50304, olmoe.vocab_size);
        assertEquals(ModelConfig.QkNorm.WHOLE, olmoe.qkNorm);
        assertEquals(null, olmoe.clip_qkv);
        assertFalse(olmoe.norm_topk_prob);
        assertEquals(4, parse(ModelShape.QWEN3_30B_A3B.config(4, DType.BF16)).num_hidden_layers);
        for (ModelShape shape : ModelShape.values()) {
            assertEquals(DType.BF16, shape.publishedDtype(), shape.toString());
            assertEquals(0.02, shape.initializerRange(), shape.toString());
        }
    }

    @Test
    void layersAndDtypeAreTheOnlyFieldsChanged() {
        ObjectNode full = ModelShape.QWEN1_5_MOE_A2_7B.config();
        ObjectNode one = ModelShape.QWEN1_5_MOE_A2_7B.config(1, DType.F16);
        assertEquals(1, one.get("num_hidden_layers").asInt());
        assertEquals(1, one.get("max_window_layers").asInt());
        assertEquals("float16", one.get("torch_dtype").asText());
        full.put("num_hidden_layers", 1).put("max_window_layers", 1).put("torch_dtype", "float16");
        assertEquals(full, one);
        ModelConfig config = parse(one);
        assertTrue(config.isMoeLayer(0));
        // one layer less than the full model's 24 layers' share, the embeddings and head unchanged
        long perLayer = (ModelSchema.parameterCount(parse(ModelShape.QWEN1_5_MOE_A2_7B.config()))
                - ModelSchema.parameterCount(config)) / 23;
        assertEquals(ModelSchema.parameterCount(config) - 2L * 151936 * 2048 - 2048, perLayer);

        ObjectNode withMlpOnly = ModelShape.QWEN1_5_MOE_A2_7B.config();
        assertTrue(ModelShape.named("qwen1.5-moe-a2.7b").isPresent());
        assertFalse(ModelShape.named("qwen").isPresent());
        assertEquals("mixtral-8x7b, qwen1.5-moe-a2.7b, glm-4.5-air, mistral-7b, gpt-oss-20b, gpt-oss-120b, "
                + "deepseek-v2-lite, deepseek-v3, kimi-k2, qwen3-30b-a3b, olmoe-1b-7b",
                ModelShape.names());
        assertThrows(IllegalArgumentException.class, () -> ModelShape.MISTRAL_7B.config(0, DType.BF16));
        assertFalse(withMlpOnly.has("mlp_only_layers"));
    }

    /** DeepSeek-V3 at 2 layers keeps one MoE layer (first_k_dense_replace 3 capped at 1); at 1 layer, only MoE. */
    @Test
    void fewLayersOfDeepSeekKeepAnMoeLayer() {
        ModelConfig two = parse(ModelShape.DEEPSEEK_V3.config(2, DType.BF16));
        assertFalse(two.isMoeLayer(0));
        assertTrue(two.isMoeLayer(1));
        assertEquals(1, two.first_k_dense_replace);
        assertTrue(parse(ModelShape.DEEPSEEK_V3.config(1, DType.BF16)).isMoeLayer(0));
        assertEquals(ModelShape.DEEPSEEK_V3.config().get("first_k_dense_replace").asInt(), 3, "the real model's");
    }
}
