package org.sparkmoe.driver.calib;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.ModelConfig;

import java.io.IOException;

/**
 * {@code router-data/router-data.json}, written beside the layer folders of an export:
 * {@code {"model", "split", "top_k", "experts", "hidden_size", "examples_per_file", "layers": [N, ...]}}
 * (layers are the decoder-layer indices, one folder {@code layer-N} each).
 */
public record RouterDataInfo(String model, String split, int topK, int experts, int hiddenSize, int examplesPerFile,
                             int[] layers) {
    public static final String FILE = "router-data.json";

    static String json(CalibratePlan plan, ModelConfig config, int[] layers) {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.put("model", plan.model());
        root.put("split", plan.split().toString());
        root.put("top_k", plan.topK());
        root.put("experts", config.num_experts);
        root.put("hidden_size", config.hidden_size);
        root.put("examples_per_file", plan.window());
        ArrayNode list = root.putArray("layers");
        for (int l : layers) {
            list.add(l);
        }
        try {
            return json.writeValueAsString(root) + "\n";
        } catch (IOException e) {
            throw new IllegalStateException("serialising " + FILE, e);
        }
    }

    /** Parses the file's text; {@code source} names it in error messages. */
    public static RouterDataInfo parse(String text, String source) {
        try {
            JsonNode root = new ObjectMapper().readTree(text);
            String[] fields = {"model", "split", "top_k", "experts", "hidden_size", "examples_per_file", "layers"};
            for (String f : fields) {
                if (root == null || !root.has(f)) {
                    throw new IllegalArgumentException(source + ": missing field \"" + f + "\"");
                }
            }
            int[] layers = new int[root.get("layers").size()];
            for (int i = 0; i < layers.length; i++) {
                layers[i] = root.get("layers").get(i).asInt();
            }
            return new RouterDataInfo(root.get("model").asText(), root.get("split").asText(), root.get("top_k").asInt(),
                    root.get("experts").asInt(), root.get("hidden_size").asInt(), root.get("examples_per_file").asInt(),
                    layers);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(source + ": not valid JSON (" + e.getOriginalMessage() + ")");
        }
    }
}
