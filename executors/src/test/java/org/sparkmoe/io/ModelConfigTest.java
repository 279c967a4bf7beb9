package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.sparkmoe.model.ModelShape;

/**
 * config.json parsing. The Mixtral fixture is a copy of the tiny model's config.json
 * (src/test/resources/config/mixtral-tiny.json); variants edit one field of it.
 */
class ModelConfigTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    private static String fixtureText() {
        return resourceText("/config/mixtral-tiny.json");
    }

    private static String resourceText(String resource) {
        try (InputStream in = ModelConfigTest.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException("test resource " + resource + " not on the classpath");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static ObjectNode mixtral() {
        return json("/config/mixtral-tiny.json");
    }

    private static ObjectNode json(String resource) {
        try {
            return (ObjectNode) JSON.readTree(resourceText(resource));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A Qwen2-MoE config in the shape of Qwen1.5-MoE-A2.7B's, scaled down. */
    private static ObjectNode qwen() {
        ObjectNode n = JSON.createObjectNode();
        n.put("model_type", "qwen2_moe");
        n.put("vocab_size", 1024);
        n.put("hidden_size", 64);
        n.put("intermediate_size", 160);
        n.put("moe_intermediate_size", 32);
        n.put("shared_expert_intermediate_size", 96);
        n.put("num_hidden_layers", 6);
        n.put("num_attention_heads", 4);
        n.put("num_key_value_heads", 4);
        n.put("num_experts", 8);
        n.put("num_experts_per_tok", 4);
        n.put("rms_norm_eps", 1e-6);
        n.put("max_position_embeddings", 256);
        n.put("rope_theta", 1000000.0);
        n.put("hidden_act", "silu");
        n.put("tie_word_embeddings", false);
        return n;
    }

    private static ModelConfig parse(ObjectNode n) {
        return ModelConfig.parse(n.toString(), "test-config.json");
    }

    private static ModelConfigException rejects(ObjectNode base, Consumer<ObjectNode> edit) {
        edit.accept(base);
        return assertThrows(ModelConfigException.class, () -> parse(base));
    }

    private static void assertMentions(Exception e, String... parts) {
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), () -> "message \"" + e.getMessage() + "\" should mention " + p);
        }
    }

    @Test
    void parsesMixtralFixture() {
        ModelConfig c = ModelConfig.parse(fixtureText(), "mixtral-tiny/config.json");
        assertEquals(ModelConfig.ModelType.MIXTRAL, c.modelType);
        assertEquals(1024, c.vocab_size);
        assertEquals(128, c.hidden_size);
        assertEquals(256, c.intermediate_size);
        assertEquals(256, c.expert_intermediate_size);
        assertEquals(4, c.num_hidden_layers);
        assertEquals(4, c.num_attention_heads);
        assertEquals(2, c.num_key_value_heads);
        assertEquals(32, c.head_dim, "head_dim null → hidden_size / num_attention_heads = 128 / 4");
        assertEquals(1e-5, c.rms_norm_eps);
        assertEquals(512, c.max_position_embeddings);
        assertEquals(10000.0, c.rope_theta);
        assertNull(c.sliding_window);
        assertFalse(c.tie_word_embeddings);
        assertFalse(c.qkv_bias);
        assertEquals(8, c.num_experts);
        assertEquals(2, c.num_experts_per_tok);
        assertTrue(c.norm_topk_prob, "Mixtral always renormalises the top-k weights");
        assertFalse(c.hasSharedExpert());
        assertEquals(0.02, c.router_aux_loss_coef);
        assertEquals(0.0, c.router_jitter_noise);
        for (int l = 0; l < 4; l++) {
            assertTrue(c.isMoeLayer(l), "Mixtral layer " + l + " is sparse");
        }
    }

    @Test
    void lowRankExpertsRankIsReadUnderItsNameAndTheNameEarlierVersionsWrote() {
        assertEquals(0, parse(mixtral()).low_rank_experts_rank);
        ObjectNode now = mixtral();
        now.put("low_rank_experts_rank", 8);
        assertEquals(8, parse(now).low_rank_experts_rank);
        ObjectNode before = mixtral();
        before.put("shared_base_lora_rank", 4);
        assertEquals(4, parse(before).low_rank_experts_rank);
        assertTrue(parse(before).hasLowRankExperts());
    }

    @Test
    void lowRankExpertsFormIsSvdWhenAbsentCpWhenNamed() {
        ObjectNode svd = mixtral();
        svd.put("low_rank_experts_rank", 8);
        assertEquals(ModelConfig.LowRankForm.SVD, parse(svd).low_rank_experts_form);
        assertFalse(parse(svd).hasCpExperts());
        ObjectNode cp = mixtral();
        cp.put("low_rank_experts_rank", 40);
        cp.put("low_rank_experts_form", "cp");
        assertEquals(ModelConfig.LowRankForm.CP, parse(cp).low_rank_experts_form);
        assertTrue(parse(cp).hasCpExperts() && parse(cp).hasLowRankExperts());
        ObjectNode tr = mixtral();
        tr.put("low_rank_experts_rank", 13);
        tr.put("low_rank_experts_form", "tr");
        assertEquals(ModelConfig.LowRankForm.TR, parse(tr).low_rank_experts_form);
        assertTrue(parse(tr).hasTrExperts() && parse(tr).hasLowRankExperts() && !parse(tr).hasCpExperts());
        assertFalse(parse(cp).hasTrExperts());
        assertEquals("test-config.json: low_rank_experts_form must be one of [svd, cp, tr], got tucker",
                rejects(mixtral(), n -> n.put("low_rank_experts_rank", 4).put("low_rank_experts_form", "tucker"))
                        .getMessage());
        assertEquals("test-config.json: low_rank_experts_form needs low_rank_experts_rank",
                rejects(mixtral(), n -> n.put("low_rank_experts_form", "cp")).getMessage());
        assertEquals("test-config.json: low_rank_experts_form cp is not built for experts with biases (gpt_oss)",
                rejects(gptOss(), n -> n.put("low_rank_experts_rank", 4).put("low_rank_experts_form", "cp"))
                        .getMessage());
        assertEquals("test-config.json: low_rank_experts_form tr is not built for experts with biases (gpt_oss)",
                rejects(gptOss(), n -> n.put("low_rank_experts_rank", 4).put("low_rank_experts_form", "tr"))
                        .getMessage());
    }

    @Test
    void ropeThetaUnderRopeParametersAndAtTopLevelAgree() {
        ModelConfig nested = parse(mixtral());
        ObjectNode top = mixtral();
        top.remove("rope_parameters");
        top.put("rope_theta", 10000.0);
        ModelConfig flat = parse(top);
        assertEquals(10000.0, nested.rope_theta);
        assertEquals(10000.0, flat.rope_theta);
    }

    @Test
    void ropeParametersWithoutThetaFallsBackToTopLevel() {
        ObjectNode n = mixtral();
        ((ObjectNode) n.get("rope_parameters")).remove("rope_theta");
        n.put("rope_theta", 500000.0);
        assertEquals(500000.0, parse(n).rope_theta);
    }

    @Test
    void missingRopeThetaEverywhereIsRejected() {
        ModelConfigException e = rejects(mixtral(), n -> n.remove("rope_parameters"));
        assertMentions(e, "test-config.json", "rope_theta");
    }

    @Test
    void explicitHeadDimIsHonoured() {
        ObjectNode n = mixtral();
        n.put("head_dim", 64); // differs from 128 / 4
        assertEquals(64, parse(n).head_dim);
    }

    @Test
    void absentHeadDimAlsoDerived() {
        ObjectNode n = mixtral();
        n.remove("head_dim");
        assertEquals(32, parse(n).head_dim);
    }

    @Test
    void absentKeyValueHeadsMeansMultiHeadAttention() {
        ObjectNode n = mixtral();
        n.remove("num_key_value_heads");
        assertEquals(4, parse(n).num_key_value_heads);
    }

    @Test
    void qwen2MoeFields() {
        ModelConfig c = parse(qwen());
        assertEquals(ModelConfig.ModelType.QWEN2_MOE, c.modelType);
        assertEquals(8, c.num_experts);
        assertEquals(4, c.num_experts_per_tok);
        assertEquals(32, c.expert_intermediate_size);
        assertEquals(160, c.intermediate_size);
        assertEquals(96, c.shared_expert_intermediate_size);
        assertTrue(c.hasSharedExpert());
        assertFalse(c.norm_topk_prob, "norm_topk_prob defaults to false for qwen2_moe");
        assertTrue(c.qkv_bias, "qkv_bias defaults to true for qwen2_moe");
        assertEquals(1, c.decoder_sparse_step);
        assertEquals(Set.of(), c.mlp_only_layers);
        assertEquals(1000000.0, c.rope_theta);
        assertEquals(16, c.head_dim);
        assertNull(c.sliding_window);
    }

    @Test
    void qwen2MoeExplicitFlags() {
        ObjectNode n = qwen();
        n.put("norm_topk_prob", true);
        n.put("qkv_bias", false);
        n.put("shared_expert_intermediate_size", 0);
        ModelConfig c = parse(n);
        assertTrue(c.norm_topk_prob);
        assertFalse(c.qkv_bias);
        assertFalse(c.hasSharedExpert());
    }

    @Test
    void qwen2MoeSparseStepAndMlpOnlyLayers() {
        ObjectNode n = qwen();
        n.put("decoder_sparse_step", 2);
        n.putArray("mlp_only_layers").add(3);
        ModelConfig c = parse(n);
        assertEquals(2, c.decoder_sparse_step);
        assertEquals(Set.of(3), c.mlp_only_layers);
        // transformers: sparse iff layer ∉ mlp_only_layers and (layer + 1) % decoder_sparse_step == 0
        boolean[] expected = {false, true, false, false, false, true};
        for (int l = 0; l < expected.length; l++) {
            assertEquals(expected[l], c.isMoeLayer(l), "isMoeLayer(" + l + ")");
        }
    }

    @Test
    void qwen2MoeMlpOnlyLayersWithStepOne() {
        ObjectNode n = qwen();
        n.putArray("mlp_only_layers").add(0).add(5);
        ModelConfig c = parse(n);
        boolean[] expected = {false, true, true, true, true, false};
        for (int l = 0; l < expected.length; l++) {
            assertEquals(expected[l], c.isMoeLayer(l), "isMoeLayer(" + l + ")");
        }
    }

    /** A Qwen3-MoE config in the shape of Qwen3-30B-A3B's, scaled down (head_dim explicit, ≠ hidden/heads). */
    private static ObjectNode qwen3() {
        ObjectNode n = qwen();
        n.put("model_type", "qwen3_moe");
        n.remove("shared_expert_intermediate_size");
        n.put("head_dim", 32);
        n.put("use_sliding_window", false);
        n.put("sliding_window", (String) null);
        n.put("max_window_layers", 6);
        return n;
    }

    /** An OLMoE config in the shape of OLMoE-1B-7B's, scaled down. */
    private static ObjectNode olmoe() {
        ObjectNode n = JSON.createObjectNode();
        n.put("model_type", "olmoe");
        n.put("vocab_size", 1024);
        n.put("hidden_size", 64);
        n.put("intermediate_size", 32);
        n.put("num_hidden_layers", 4);
        n.put("num_attention_heads", 4);
        n.put("num_key_value_heads", 4);
        n.put("num_experts", 8);
        n.put("num_experts_per_tok", 2);
        n.put("rms_norm_eps", 1e-5);
        n.put("max_position_embeddings", 256);
        n.put("rope_theta", 10000.0);
        n.put("clip_qkv", (String) null);
        return n;
    }

    @Test
    void qwen3MoeFields() {
        ModelConfig c = parse(qwen3());
        assertEquals(ModelConfig.ModelType.QWEN3_MOE, c.modelType);
        assertEquals(32, c.head_dim, "explicit head_dim, not hidden/heads = 16");
        assertEquals(ModelConfig.QkNorm.PER_HEAD, c.qkNorm);
        assertFalse(c.qkv_bias, "attention_bias defaults to false for qwen3_moe");
        assertFalse(c.attention_bias);
        assertFalse(c.hasSharedExpert());
        assertFalse(c.norm_topk_prob);
        assertEquals(32, c.expert_intermediate_size);
        assertEquals(160, c.intermediate_size);
        assertNull(c.sliding_window, "use_sliding_window false");
        assertNull(c.clip_qkv);
    }

    @Test
    void qwen3MoeReadsTheExpertCountTransformers5Writes() {
        ObjectNode n = qwen3();
        n.remove("num_experts");
        n.put("num_local_experts", 6);
        assertEquals(6, parse(n).num_experts);
    }

    @Test
    void qwen3MoeWithoutHeadDimDerivesIt() {
        ObjectNode n = qwen3();
        n.remove("head_dim");
        assertEquals(16, parse(n).head_dim, "Qwen3MoeAttention: getattr(config, \"head_dim\", hidden // heads)");
    }

    @Test
    void qwen3MoeAttentionBiasAndSlidingWindow() {
        ObjectNode n = qwen3();
        n.put("attention_bias", true);
        n.put("use_sliding_window", true);
        n.put("sliding_window", 64);
        n.put("norm_topk_prob", true);
        n.put("decoder_sparse_step", 2);
        n.putArray("mlp_only_layers").add(3);
        ModelConfig c = parse(n);
        assertTrue(c.qkv_bias);
        assertTrue(c.attention_bias);
        assertEquals(64, c.sliding_window, "every layer, as transformers 5.17 does (max_window_layers unread)");
        assertTrue(c.norm_topk_prob);
        boolean[] expected = {false, true, false, false, false, true};
        for (int l = 0; l < expected.length; l++) {
            assertEquals(expected[l], c.isMoeLayer(l), "isMoeLayer(" + l + ")");
        }
    }

    @Test
    void qwen3MoeSlidingWindowNeedsItsSize() {
        ModelConfigException e = rejects(qwen3(), n -> n.put("use_sliding_window", true));
        assertMentions(e, "sliding_window");
    }

    @Test
    void denseQwen3DefaultsHeadDimTo128() {
        ObjectNode n = qwen3();
        n.put("model_type", "qwen3");
        n.remove("head_dim");
        ModelConfig c = parse(n);
        assertEquals(ModelConfig.ModelType.QWEN3, c.modelType);
        assertEquals(128, c.head_dim, "Qwen3Config declares head_dim = 128");
        assertEquals(0, c.num_experts);
        assertFalse(c.isMoeLayer(0));
        assertEquals(ModelConfig.QkNorm.PER_HEAD, c.qkNorm);
    }

    /** A GLM-4.5 config in the shape of GLM-4.5-Air's, scaled down; n_group 2 of which 1 is kept. */
    private static ObjectNode glm() {
        ObjectNode n = JSON.createObjectNode();
        n.put("model_type", "glm4_moe");
        n.put("vocab_size", 1024);
        n.put("hidden_size", 64);
        n.put("intermediate_size", 96);
        n.put("moe_intermediate_size", 16);
        n.put("num_hidden_layers", 3);
        n.put("num_attention_heads", 4);
        n.put("num_key_value_heads", 2);
        n.put("head_dim", 32);
        n.put("n_routed_experts", 8);
        n.put("n_shared_experts", 1);
        n.put("num_experts_per_tok", 2);
        n.put("n_group", 2);
        n.put("topk_group", 1);
        n.put("routed_scaling_factor", 2.5);
        n.put("first_k_dense_replace", 1);
        n.put("attention_bias", true);
        n.put("rms_norm_eps", 1e-5);
        n.put("max_position_embeddings", 256);
        n.put("rope_theta", 10000.0);
        return n;
    }

    @Test
    void glmMoeFields() {
        ModelConfig c = parse(glm());
        assertEquals(ModelConfig.ModelType.GLM4_MOE, c.modelType);
        assertEquals(8, c.num_experts);
        assertEquals(16, c.expert_intermediate_size);
        assertEquals(16, c.shared_expert_intermediate_size, "n_shared_experts · moe_intermediate_size");
        assertTrue(c.hasSharedExpert());
        assertFalse(c.hasSharedExpertGate(), "GLM's shared experts are added ungated");
        assertTrue(c.norm_topk_prob, "norm_topk_prob defaults to true for glm4_moe");
        assertEquals(1, c.first_k_dense_replace);
        assertFalse(c.isMoeLayer(0), "first_k_dense_replace 1: layer 0 dense");
        assertTrue(c.isMoeLayer(1));
        assertTrue(c.isMoeLayer(2));
        assertEquals("sigmoid", c.routing.scoring_func());
        assertTrue(c.routing.scoreCorrectionBias());
        assertTrue(c.routing.groupRankTop2Sum());
        assertTrue(c.routing.groupLimited());
        assertEquals(2, c.routing.n_group());
        assertEquals(1, c.routing.topk_group());
        assertEquals(2.5, c.routing.routed_scaling_factor());
        assertTrue(c.qkv_bias, "attention_bias puts a bias on q, k and v");
        assertFalse(c.attention_bias, "Glm4MoeAttention: o_proj never has a bias");
        assertEquals(ModelConfig.QkNorm.NONE, c.qkNorm, "use_qk_norm defaults to false");
        assertEquals(0.5, c.partial_rotary_factor, "Glm4MoeConfig's default");
        assertEquals(16, c.rotaryDim(), "RoPE on the leading half of head_dim 32");
    }

    @Test
    void glmMoePartialRotaryFactorTopLevelOrUnderRopeParameters() {
        assertEquals(8, parse(glm().put("partial_rotary_factor", 0.25)).rotaryDim(), "GLM's releases: top-level");
        ObjectNode n = glm().put("partial_rotary_factor", 0.25);
        n.remove("rope_theta");
        n.putObject("rope_parameters").put("rope_type", "default").put("rope_theta", 10000.0)
                .put("partial_rotary_factor", 1.0);
        assertEquals(32, parse(n).rotaryDim(), "transformers 5 writes it under rope_parameters");
        assertMentions(rejects(glm(), m -> m.put("partial_rotary_factor", 0.3)),
                "partial_rotary_factor 0.3 of head_dim 32 gives 9 rotated entries");
        assertEquals(1.0, parse(qwen3()).partial_rotary_factor, "other types rotate the whole head");
    }

    @Test
    void glmMoeDefaultsAndQkNorm() {
        ObjectNode n = glm();
        n.remove("n_group");
        n.remove("topk_group");
        n.remove("routed_scaling_factor");
        n.remove("n_shared_experts");
        n.remove("first_k_dense_replace");
        n.put("use_qk_norm", true);
        n.remove("n_routed_experts");
        n.put("num_local_experts", 4);
        ModelConfig c = parse(n);
        assertEquals(4, c.num_experts, "num_local_experts is Glm4MoeConfig's alias of n_routed_experts");
        assertEquals(16, c.shared_expert_intermediate_size, "n_shared_experts defaults to 1");
        assertFalse(c.isMoeLayer(0), "first_k_dense_replace defaults to 1");
        assertFalse(c.routing.groupLimited(), "n_group and topk_group default to 1");
        assertEquals(1.0, c.routing.routed_scaling_factor());
        assertEquals(ModelConfig.QkNorm.PER_HEAD, c.qkNorm);
        assertFalse(parse(glm().put("n_shared_experts", 0)).hasSharedExpert());
    }

    @Test
    void glmMoeGroupsMustDivideAndHoldTopK() {
        assertMentions(rejects(glm(), n -> n.put("n_group", 3)), "n_group 3 must divide n_routed_experts 8");
        assertMentions(rejects(glm(), n -> n.put("topk_group", 3)), "1 ≤ topk_group ≤ n_group");
        assertMentions(rejects(glm(), n -> n.put("num_experts_per_tok", 5)),
                "topk_group 1 groups of 4 experts cannot hold num_experts_per_tok 5");
        assertMentions(rejects(glm(), n -> n.put("routed_scaling_factor", 0.0)), "routed_scaling_factor");
    }

    @Test
    void olmoeFields() {
        ModelConfig c = parse(olmoe());
        assertEquals(ModelConfig.ModelType.OLMOE, c.modelType);
        assertEquals(8, c.num_experts);
        assertEquals(32, c.expert_intermediate_size, "OLMoE experts are intermediate_size wide");
        assertEquals(ModelConfig.QkNorm.WHOLE, c.qkNorm);
        assertNull(c.clip_qkv);
        assertFalse(c.norm_topk_prob, "norm_topk_prob defaults to false for olmoe");
        assertFalse(c.hasSharedExpert());
        assertFalse(c.qkv_bias);
        for (int l = 0; l < 4; l++) {
            assertTrue(c.isMoeLayer(l), "every OLMoE layer is sparse");
        }
    }

    @Test
    void olmoeClipAndLocalExpertsAlias() {
        ObjectNode n = olmoe();
        n.put("clip_qkv", 8.0);
        n.remove("num_experts");
        n.put("num_local_experts", 6);
        ModelConfig c = parse(n);
        assertEquals(8.0, c.clip_qkv);
        assertEquals(6, c.num_experts, "OlmoeConfig.attribute_map: num_local_experts → num_experts");
    }

    @Test
    void olmoeRejectsHeadDimThatDoesNotTileHidden() {
        ModelConfigException e = rejects(olmoe(), n -> n.put("head_dim", 32));
        assertMentions(e, "olmoe", "hidden_size", "q_norm");
    }

    /** A gpt_oss config in the shape of gpt-oss-20b's, scaled down (no layer_types: GptOssConfig's default). */
    private static ObjectNode gptOss() {
        ObjectNode n = JSON.createObjectNode();
        n.put("model_type", "gpt_oss");
        n.put("vocab_size", 1024);
        n.put("hidden_size", 64);
        n.put("intermediate_size", 64);
        n.put("head_dim", 16);
        n.put("num_hidden_layers", 3);
        n.put("num_attention_heads", 4);
        n.put("num_key_value_heads", 2);
        n.put("num_local_experts", 8);
        n.put("num_experts_per_tok", 2);
        n.put("sliding_window", 8);
        n.put("rms_norm_eps", 1e-5);
        n.put("max_position_embeddings", 256);
        n.put("rope_theta", 150000.0);
        n.put("swiglu_limit", 7.0);
        return n;
    }

    @Test
    void gptOssFields() {
        ModelConfig c = parse(gptOss());
        assertEquals(ModelConfig.ModelType.GPT_OSS, c.modelType);
        assertEquals(8, c.num_experts);
        assertEquals(64, c.expert_intermediate_size);
        assertTrue(c.norm_topk_prob, "softmax over the top-k = the renormalised softmax");
        assertTrue(c.attention_bias && c.qkv_bias, "attention_bias defaults to true");
        assertTrue(c.attention_sinks && c.clamped_experts);
        assertEquals(List.of("sliding_attention", "full_attention", "sliding_attention"), c.layer_types);
        assertEquals(8, c.slidingWindow(0));
        assertEquals(null, c.slidingWindow(1));
        assertEquals(8, c.slidingWindow(2));
        assertEquals(null, parse(qwen3()).layer_types);
    }

    @Test
    void gptOssRejectsBadLayerTypesAndOtherLimits() {
        assertMentions(rejects(gptOss(), n -> n.putArray("layer_types").add("full_attention")), "layer_types",
                "one type per layer (3)");
        assertMentions(rejects(gptOss(), n -> n.putArray("layer_types").add("full_attention").add("chunked_attention")
                .add("full_attention")), "layer_types", "chunked_attention");
        assertMentions(rejects(gptOss(), n -> n.putNull("sliding_window")), "sliding_window is null");
        assertMentions(rejects(gptOss(), n -> n.put("swiglu_limit", 10.0)), "swiglu_limit", "7.0");
        ModelConfig allFull = parse(gptOss().put("sliding_window", (String) null).set("layer_types",
                JSON.createArrayNode().add("full_attention").add("full_attention").add("full_attention")));
        assertEquals(null, allFull.slidingWindow(0));
    }

    @Test
    void olmoeRejectsNonPositiveClip() {
        ModelConfigException e = rejects(olmoe(), n -> n.put("clip_qkv", 0.0));
        assertMentions(e, "clip_qkv");
    }

    @Test
    void mistralIsDense() {
        ObjectNode n = mixtral();
        n.put("model_type", "mistral");
        n.remove("num_local_experts");
        n.remove("num_experts_per_tok");
        ModelConfig c = parse(n);
        assertEquals(ModelConfig.ModelType.MISTRAL, c.modelType);
        assertEquals(0, c.num_experts);
        assertFalse(c.isMoeLayer(0));
    }

    @Test
    void unknownModelTypeNamesFieldAndValue() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("model_type", "llama"));
        assertMentions(e, "test-config.json", "model_type", "llama");
    }

    @Test
    void yarnRopeParametersWithTheirDefaults() {
        ObjectNode n = mixtral();
        ((ObjectNode) n.get("rope_parameters")).put("rope_type", "yarn").put("factor", 4.0)
                .put("original_max_position_embeddings", 8);
        YarnScaling y = parse(n).rope_scaling;
        assertEquals(new YarnScaling(4.0, 8, 32, 1, null, null, null, true), y);
        assertEquals(0.1 * Math.log(4.0) + 1, y.cosSinFactor(), 1e-15);
        assertEquals(0.5, y.softmaxScale(0.5), 0.0);
    }

    @Test
    void legacyRopeScalingYarnAsDeepSeekV2LiteWritesIt() {
        ObjectNode n = mixtral();
        n.remove("rope_parameters");
        n.put("rope_theta", 10000.0);
        n.putObject("rope_scaling").put("type", "yarn").put("factor", 40).put("original_max_position_embeddings", 4096)
                .put("beta_fast", 32).put("beta_slow", 1).put("mscale", 0.707).put("mscale_all_dim", 0.707);
        ModelConfig c = parse(n);
        assertEquals(10000.0, c.rope_theta);
        assertEquals(new YarnScaling(40, 4096, 32, 1, 0.707, 0.707, null, true), c.rope_scaling);
        assertEquals(1.0, c.rope_scaling.cosSinFactor(), 0.0);
    }

    @Test
    void yarnFactorDefaultsToTheLengthRatio() {
        ObjectNode n = mixtral();
        n.put("max_position_embeddings", 64);
        ((ObjectNode) n.get("rope_parameters")).put("rope_type", "yarn").put("original_max_position_embeddings", 16)
                .put("truncate", false);
        YarnScaling y = parse(n).rope_scaling;
        assertEquals(4.0, y.factor());
        assertFalse(y.truncate());
    }

    @Test
    void otherRopeTypeUnsupported() {
        ModelConfigException e = rejects(mixtral(),
                n -> ((ObjectNode) n.get("rope_parameters")).put("rope_type", "llama3"));
        assertMentions(e, "rope_parameters", "llama3");
    }

    @Test
    void ropeScalingUnsupported() {
        ModelConfigException e = rejects(mixtral(),
                n -> n.putObject("rope_scaling").put("type", "linear").put("factor", 2.0));
        assertMentions(e, "rope_scaling", "linear");
    }

    @Test
    void nullRopeScalingIsAccepted() {
        ObjectNode n = mixtral();
        n.putNull("rope_scaling");
        assertEquals(10000.0, parse(n).rope_theta);
    }

    @Test
    void geluActivationUnsupported() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("hidden_act", "gelu"));
        assertMentions(e, "hidden_act", "gelu");
    }

    @Test
    void moreExpertsPerTokenThanExperts() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("num_experts_per_tok", 9));
        assertMentions(e, "num_experts_per_tok", "9", "8");
    }

    @Test
    void qwenMoreExpertsPerTokenThanExperts() {
        ModelConfigException e = rejects(qwen(), n -> n.put("num_experts_per_tok", 9));
        assertMentions(e, "num_experts_per_tok", "9", "8");
    }

    @Test
    void headsNotMultipleOfKeyValueHeads() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("num_key_value_heads", 3));
        assertMentions(e, "num_attention_heads", "4", "num_key_value_heads", "3");
    }

    @Test
    void hiddenNotMultipleOfHeadsWithNullHeadDim() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("num_attention_heads", 6).put("num_key_value_heads", 6));
        assertMentions(e, "head_dim", "hidden_size", "128", "6");
    }

    @Test
    void oddHeadDimRejected() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("head_dim", 33));
        assertMentions(e, "head_dim", "33");
    }

    @Test
    void malformedJson() {
        ModelConfigException e = assertThrows(ModelConfigException.class,
                () -> ModelConfig.parse("{\"model_type\": \"mixtral\", ", "broken/config.json"));
        assertMentions(e, "broken/config.json", "malformed JSON");
    }

    @Test
    void jsonThatIsNotAnObject() {
        ModelConfigException e = assertThrows(ModelConfigException.class,
                () -> ModelConfig.parse("[1, 2]", "list/config.json"));
        assertMentions(e, "list/config.json", "JSON object");
    }

    @Test
    void missingRequiredFieldIsNamed() {
        for (String field : new String[] {"hidden_size", "vocab_size", "num_hidden_layers", "num_local_experts",
                "intermediate_size", "rms_norm_eps", "model_type"}) {
            ModelConfigException e = rejects(mixtral(), n -> n.remove(field));
            assertMentions(e, "missing field " + field);
        }
        ModelConfigException e = rejects(qwen(), n -> n.remove("moe_intermediate_size"));
        assertMentions(e, "missing field moe_intermediate_size");
    }

    @Test
    void nullRequiredFieldCountsAsMissing() {
        ModelConfigException e = rejects(mixtral(), n -> n.putNull("hidden_size"));
        assertMentions(e, "missing field hidden_size");
    }

    @Test
    void mlpOnlyLayerOutOfRange() {
        ModelConfigException e = rejects(qwen(), n -> n.putArray("mlp_only_layers").add(1).add(6));
        assertMentions(e, "mlp_only_layers", "6", "[0, 6)");
    }

    @Test
    void negativeMlpOnlyLayer() {
        ModelConfigException e = rejects(qwen(), n -> n.putArray("mlp_only_layers").add(-1));
        assertMentions(e, "mlp_only_layers", "-1");
    }

    @Test
    void negativeSizes() {
        for (String field : new String[] {"hidden_size", "vocab_size", "intermediate_size", "num_local_experts",
                "num_attention_heads", "max_position_embeddings"}) {
            ModelConfigException e = rejects(mixtral(), n -> n.put(field, -4));
            assertMentions(e, "field " + field, "non-negative", "-4");
        }
    }

    @Test
    void zeroSizes() {
        for (String field : new String[] {"hidden_size", "vocab_size", "num_hidden_layers", "num_experts_per_tok",
                "num_key_value_heads", "head_dim"}) {
            ModelConfigException e = rejects(mixtral(), n -> n.put(field, 0));
            assertMentions(e, "field " + field, "> 0", "got 0");
        }
        ModelConfigException e = rejects(qwen(), n -> n.put("moe_intermediate_size", 0));
        assertMentions(e, "field moe_intermediate_size", "> 0");
    }

    @Test
    void nonPositiveDoubles() {
        ModelConfigException zero = rejects(mixtral(), n -> n.put("rms_norm_eps", 0.0));
        assertMentions(zero, "rms_norm_eps", "> 0");
        ModelConfigException negative = rejects(mixtral(),
                n -> ((ObjectNode) n.get("rope_parameters")).put("rope_theta", -1.0));
        assertMentions(negative, "rope_theta", "-1.0");
    }

    @Test
    void fractionalSizeRejected() {
        ModelConfigException e = rejects(mixtral(), n -> n.put("hidden_size", 128.5));
        assertMentions(e, "hidden_size", "128.5");
    }

    @Test
    void slidingWindowOnQwenRejected() {
        ModelConfigException e = rejects(qwen(), n -> n.put("use_sliding_window", true));
        assertMentions(e, "use_sliding_window");
    }

    @Test
    void wrongTypeForBoolean() {
        ModelConfigException e = rejects(qwen(), n -> n.put("norm_topk_prob", "yes"));
        assertMentions(e, "norm_topk_prob", "yes");
    }

    @Test
    void jsonCopyIsDetached() {
        ModelConfig c = parse(mixtral());
        ObjectNode copy = c.jsonCopy();
        copy.put("hidden_size", 7);
        assertEquals(128, c.jsonCopy().get("hidden_size").asInt());
    }

    private static ObjectNode shape(ModelShape s) {
        return s.config();
    }

    /** DeepSeek-V2-Lite's config.json as published (synth's shape deepseek-v2-lite). */
    @Test
    void deepSeekV2LiteFields() {
        ModelConfig c = parse(shape(ModelShape.DEEPSEEK_V2_LITE));
        assertEquals(ModelConfig.ModelType.DEEPSEEK_V2, c.modelType);
        assertEquals(new MlaConfig(null, 512, 128, 64, 128, true), c.mla, "q_lora_rank null: a plain q_proj");
        assertEquals(64, c.head_dim, "transformers sets head_dim = qk_rope_head_dim");
        assertEquals(64, c.num_experts);
        assertEquals(6, c.num_experts_per_tok);
        assertEquals(1408, c.expert_intermediate_size);
        assertEquals(2 * 1408, c.shared_expert_intermediate_size);
        assertFalse(c.hasSharedExpertGate());
        assertFalse(c.isMoeLayer(0), "first_k_dense_replace 1");
        assertTrue(c.isMoeLayer(1));
        assertEquals("softmax", c.routing.scoring_func());
        assertFalse(c.routing.groupLimited(), "greedy");
        assertFalse(c.routing.scoreCorrectionBias());
        assertFalse(c.norm_topk_prob);
        assertEquals(new YarnScaling(40, 4096, 32, 1, 0.707, 0.707, null, true), c.rope_scaling);
        assertEquals(10000.0, c.rope_theta);
    }

    /** DeepSeek-V3's config.json as published (synth's shape deepseek-v3). */
    @Test
    void deepSeekV3Fields() {
        ModelConfig c = parse(shape(ModelShape.DEEPSEEK_V3));
        assertEquals(ModelConfig.ModelType.DEEPSEEK_V3, c.modelType);
        assertEquals(new MlaConfig(1536, 512, 128, 64, 128, true), c.mla);
        assertEquals(192, c.mla.qk_head_dim());
        assertEquals(256, c.num_experts);
        assertEquals(2048, c.shared_expert_intermediate_size, "1 shared expert");
        assertFalse(c.isMoeLayer(2), "first_k_dense_replace 3");
        assertTrue(c.isMoeLayer(3));
        assertEquals(new RoutingConfig("sigmoid", "noaux_tc", 8, 4, 2.5), c.routing);
        assertTrue(c.routing.scoreCorrectionBias());
        assertTrue(c.norm_topk_prob);
        assertArrayEquals(new int[] {128, 128}, c.weight_block_size, "quantization_config.weight_block_size");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V3),
                n -> ((ObjectNode) n.get("quantization_config")).put("quant_method", "awq")),
                "quantization_config", "awq");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V3),
                n -> ((ObjectNode) n.get("quantization_config")).putArray("weight_block_size").add(128)),
                "weight_block_size");
    }

    /** Kimi-K2's config.json (model_type kimi_k2, DeepSeek-V3's code): 384 experts in one group, YaRN with beta 1/1. */
    @Test
    void kimiK2ReadsAsDeepSeekV3() {
        ModelConfig c = parse(shape(ModelShape.KIMI_K2));
        assertEquals(ModelConfig.ModelType.DEEPSEEK_V3, c.modelType);
        assertEquals(384, c.num_experts);
        assertFalse(c.routing.groupLimited(), "n_group 1");
        assertEquals(2.827, c.routing.routed_scaling_factor());
        assertEquals(new YarnScaling(32, 4096, 1, 1, 1.0, 1.0, null, true), c.rope_scaling);
        assertFalse(c.isMoeLayer(0));
        assertTrue(c.isMoeLayer(1));
    }

    /** A deepseek_v3 config with none of the optional fields takes DeepseekV3Config's defaults. */
    @Test
    void deepSeekV3Defaults() {
        ObjectNode n = shape(ModelShape.DEEPSEEK_V3);
        for (String f : new String[] {"first_k_dense_replace", "n_group", "topk_group", "routed_scaling_factor",
                "n_shared_experts", "norm_topk_prob", "scoring_func", "topk_method", "q_lora_rank", "kv_lora_rank",
                "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rope_scaling"}) {
            n.remove(f);
        }
        ModelConfig c = parse(n);
        assertEquals(new MlaConfig(1536, 512, 128, 64, 128, true), c.mla);
        assertEquals(new RoutingConfig("sigmoid", "noaux_tc", 8, 4, 2.5), c.routing);
        assertEquals(3, c.first_k_dense_replace);
        assertEquals(1, c.n_shared_experts);
        assertTrue(c.norm_topk_prob);
        assertEquals(null, c.rope_scaling);
        assertFalse(parse(n.put("rope_interleave", false)).mla.rope_interleave());
    }

    @Test
    void deepSeekRefusesWhatTransformersAndDeepSeekDisagreeOn() {
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V2_LITE), n -> n.put("norm_topk_prob", true)),
                "deepseek_v2", "norm_topk_prob");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V3), n -> n.put("moe_layer_freq", 2)),
                "moe_layer_freq", "2");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V3), n -> n.put("num_key_value_heads", 64)),
                "num_key_value_heads", "64", "128");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V3), n -> n.put("scoring_func", "softmax")),
                "scoring_func", "softmax", "deepseek_v3");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V2_LITE), n -> n.put("topk_method", "noaux_tc")),
                "topk_method", "noaux_tc", "deepseek_v2");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V2_LITE), n -> n.put("mlp_bias", true)), "mlp_bias");
        assertMentions(rejects(shape(ModelShape.DEEPSEEK_V2_LITE), n -> n.put("qk_rope_head_dim", 63)),
                "qk_rope_head_dim", "63");
    }
}
