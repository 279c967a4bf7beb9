package org.sparkmoe.model;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.InputStream;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.YarnScaling;

/**
 * YaRN against transformers 5.17 itself: src/test/resources/rope/yarn-reference.json was written by
 * make_yarn_reference.py next to it (DeepseekV3RotaryEmbedding, DeepseekV3Attention.scaling and
 * GptOssRotaryEmbedding in float32). Each case's rope_parameters go through {@link ModelConfig} as a config.json
 * would carry them; inv_freq must match to the bit, cos/sin (read back through {@link RotaryEmbedding#rotate} of unit
 * vectors) to float32 rounding of cos/sin, and DeepSeek's softmax scale to float64 rounding.
 */
class RotaryEmbeddingYarnTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    static Stream<Arguments> cases() throws IOException {
        try (InputStream in = RotaryEmbeddingYarnTest.class.getResourceAsStream("/rope/yarn-reference.json")) {
            if (in == null) {
                throw new IllegalStateException("test resource /rope/yarn-reference.json not on the classpath");
            }
            JsonNode root = JSON.readTree(in);
            Stream.Builder<Arguments> out = Stream.builder();
            root.fields().forEachRemaining((Map.Entry<String, JsonNode> e) -> out.add(Arguments.of(e.getKey(),
                    e.getValue())));
            return out.build();
        }
    }

    /** A minimal mixtral config.json whose rope_parameters are the golden's. */
    private static ModelConfig config(JsonNode golden) {
        ObjectNode n = JSON.createObjectNode();
        n.put("model_type", "mixtral");
        n.put("vocab_size", 16);
        n.put("hidden_size", 32);
        n.put("intermediate_size", 8);
        n.put("num_hidden_layers", 1);
        n.put("num_attention_heads", 2);
        n.put("num_local_experts", 2);
        n.put("num_experts_per_tok", 1);
        n.put("rms_norm_eps", 1e-6);
        n.put("max_position_embeddings", 163840);
        n.set("rope_parameters", golden.get("rope_parameters").deepCopy());
        return ModelConfig.parse(n.toString(), golden.get("rope_parameters").toString());
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesTransformers(String name, JsonNode golden) {
        ModelConfig c = config(golden);
        YarnScaling yarn = c.rope_scaling;
        int dim = golden.get("dim").asInt();
        int half = dim / 2;

        float[] inv = RotaryEmbedding.inverseFrequencies(dim, c.rope_theta, yarn);
        for (int i = 0; i < half; i++) {
            assertEquals(golden.get("inv_freq").get(i).floatValue(), inv[i], 0f, name + " inv_freq[" + i + "]");
        }
        assertEquals(golden.get("attention_scaling").asDouble(), yarn.cosSinFactor(), 1e-15, name + " cos/sin factor");
        if (!golden.get("softmax_scale").isNull()) {
            int qkHeadDim = dim + 8; // qk_rope_head_dim + qk_nope_head_dim 8 in the recipe
            assertEquals(golden.get("softmax_scale").asDouble(), yarn.softmaxScale(Math.pow(qkHeadDim, -0.5)),
                    1e-15, name + " softmax scale");
        }

        JsonNode positions = golden.get("positions");
        RotaryEmbedding rope = new RotaryEmbedding(dim, c.rope_theta, positions.get(positions.size() - 1).asInt() + 1,
                yarn);
        for (int p = 0; p < positions.size(); p++) {
            int pos = positions.get(p).asInt();
            for (int i = 0; i < half; i++) {
                float[] unit = new float[dim];
                unit[i] = 1f;
                float[] out = new float[dim];
                rope.rotate(unit, 0, out, 0, pos);
                // x1 = 1, x2 = 0: out[i] = cos, out[i + hd/2] = sin (DeepSeek's tables repeat the half, gpt-oss's
                // hold one half)
                float cos = golden.get("cos").get(p).get(i).floatValue();
                float sin = golden.get("sin").get(p).get(i).floatValue();
                assertEquals(cos, out[i], 2 * Math.ulp(1f), name + " cos at position " + pos + ", i " + i);
                assertEquals(sin, out[i + half], 2 * Math.ulp(1f), name + " sin at position " + pos + ", i " + i);
            }
        }
    }
}
