package org.sparkmoe.adapter;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.ModelConfig;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;

/** Configs of the tiny test models and random non-zero trainable states for them. */
final class AdapterFixtures {
    private AdapterFixtures() {
    }

    /** The 4-layer, 8-expert Mixtral (D 128, I 256). */
    static ModelConfig mixtral() {
        return config("mixtral-tiny");
    }

    /** The 3-layer Qwen2-MoE (layer 1 dense, 6 experts, shared expert; D 32, expert I 16). */
    static ModelConfig qwen() {
        return config("qwen2-moe-tiny");
    }

    /** The 3-layer GLM-4.5 (layer 0 dense, 8 experts in 2 groups, a shared expert; D 32, expert I 16). */
    static ModelConfig glm() {
        return config("glm4-moe-tiny");
    }

    static String configJson(String name) {
        try (InputStream in = AdapterFixtures.class.getResourceAsStream("/config/" + name + ".json")) {
            if (in == null) {
                throw new IllegalStateException("test resource /config/" + name + ".json not on the classpath");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static ModelConfig config(String name) {
        return ModelConfig.parse(configJson(name), name + "/config.json");
    }

    /** Every tensor of the expected state filled with seeded normal values (B non-zero too). */
    static LinkedHashMap<String, INDArray> randomState(ModelConfig model, AdapterConfig config, long seed) {
        Nd4j.getRandom().setSeed(seed);
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        PeftAdapter.expectedState(model, config).forEach((key, shape) ->
                state.put(key, Nd4j.randn(DataType.FLOAT, shape).muli(0.1)));
        return state;
    }
}
