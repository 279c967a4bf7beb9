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
 * parameter count their model cards publish (Mixtral-8x7B 46.7B, Qwen1.5-MoE-A2.7B 14.3B, Mistral-7B 7.24B).
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
        ModelConfig mistral = parse(ModelShape.MISTRAL_7B.config());
        assertEquals(ModelConfig.ModelType.MISTRAL, mistral.modelType);
        assertEquals(4096, mistral.sliding_window);
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
        assertEquals("mixtral-8x7b, qwen1.5-moe-a2.7b, mistral-7b, deepseek-v2-lite, deepseek-v3, kimi-k2",
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
