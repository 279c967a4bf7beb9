package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.sparkmoe.io.ModelConfig;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * What surgery reads from calibrate's {@code router-stats.json}, per MoE layer (in layer order): the selection
 * counts, the logit sums, {@code topm_sq_sum} (m = 1..E) and the token count, plus each file's selection counts and
 * tokens. Parsing checks the file against the model (expert and layer counts) and names the culprit field.
 */
public final class RoutingStats implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    /** One MoE layer's sums. */
    public record Layer(long[] count, double[] logitSum, double[] topmSqSum, long tokens) implements java.io.Serializable {
        /** Mean router logit per expert [E]. */
        public double[] meanLogit() {
            double[] out = new double[logitSum.length];
            for (int e = 0; e < out.length; e++) {
                out[e] = logitSum[e] / tokens;
            }
            return out;
        }

        /** E[Σ_{i≤m} ĝᵢ²] over tokens, the top-m weights renormalised (m = 1..E). */
        public double meanTopmSq(int m) {
            return topmSqSum[m - 1] / tokens;
        }
    }

    private final int experts;
    private final int topK;
    private final List<Layer> layers;
    /** [files][layers] (count [E], tokens). */
    private final List<List<long[]>> fileCounts;
    private final List<long[]> fileTokens;

    private RoutingStats(int experts, int topK, List<Layer> layers, List<List<long[]>> fileCounts, List<long[]> fileTokens) {
        this.experts = experts;
        this.topK = topK;
        this.layers = layers;
        this.fileCounts = fileCounts;
        this.fileTokens = fileTokens;
    }

    /** Parses {@code json} (named {@code source} in errors) and checks it against {@code config}. */
    public static RoutingStats parse(String json, String source, ModelConfig config, int moeLayers) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(source + ": not valid JSON (" + e.getOriginalMessage() + ")");
        }
        if (root == null || !root.isObject()) {
            throw new IllegalArgumentException(source + ": expected a router-stats.json object");
        }
        int experts = intField(root, "experts", source);
        int topK = intField(root, "top_k", source);
        if (experts != config.num_experts) {
            throw new IllegalArgumentException(source + ": describes " + experts + " experts, the model has "
                    + config.num_experts);
        }
        JsonNode layerNodes = root.path("layers");
        if (!layerNodes.isArray() || layerNodes.size() != moeLayers) {
            throw new IllegalArgumentException(source + ": \"layers\" must list the model's " + moeLayers
                    + " MoE layers, found " + (layerNodes.isArray() ? layerNodes.size() : "none"));
        }
        List<Layer> layers = new ArrayList<>();
        for (int l = 0; l < moeLayers; l++) {
            JsonNode n = layerNodes.get(l);
            String where = source + ": layers[" + l + "]";
            long tokens = longField(n, "tokens", where);
            if (tokens < 1) {
                throw new IllegalArgumentException(where + ".tokens must be ≥ 1, got " + tokens);
            }
            layers.add(new Layer(JsonArrays.longs(n, "count", experts, where),
                    JsonArrays.doubles(n, "logit_sum", experts, where),
                    JsonArrays.doubles(n, "topm_sq_sum", experts, where), tokens));
        }
        List<List<long[]>> fileCounts = new ArrayList<>();
        List<long[]> fileTokens = new ArrayList<>();
        JsonNode files = root.path("files");
        for (Iterator<Map.Entry<String, JsonNode>> it = files.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> file = it.next();
            JsonNode perLayer = file.getValue().path("layers");
            String where = source + ": files." + file.getKey();
            if (!perLayer.isArray() || perLayer.size() != moeLayers) {
                throw new IllegalArgumentException(where + ".layers must list " + moeLayers + " MoE layers");
            }
            List<long[]> counts = new ArrayList<>();
            long[] tokens = new long[moeLayers];
            for (int l = 0; l < moeLayers; l++) {
                counts.add(JsonArrays.longs(perLayer.get(l), "count", experts, where + ".layers[" + l + "]"));
                tokens[l] = longField(perLayer.get(l), "tokens", where + ".layers[" + l + "]");
            }
            fileCounts.add(counts);
            fileTokens.add(tokens);
        }
        return new RoutingStats(experts, topK, layers, fileCounts, fileTokens);
    }

    public int experts() {
        return experts;
    }

    /** The K the statistics were gathered with. */
    public int topK() {
        return topK;
    }

    public int moeLayers() {
        return layers.size();
    }

    public Layer layer(int moeLayer) {
        return layers.get(moeLayer);
    }

    public int files() {
        return fileCounts.size();
    }

    /** Selection rate of every expert in file f's tokens of MoE layer l [E] (0 for a file with no tokens). */
    public double[] fileRate(int f, int moeLayer) {
        long[] count = fileCounts.get(f).get(moeLayer);
        long tokens = fileTokens.get(f)[moeLayer];
        double[] out = new double[count.length];
        for (int e = 0; e < out.length; e++) {
            out[e] = tokens == 0 ? 0 : (double) count[e] / tokens;
        }
        return out;
    }

    private static int intField(JsonNode n, String name, String where) {
        JsonNode v = n.get(name);
        if (v == null || !v.canConvertToInt() || !v.isIntegralNumber() || v.asInt() < 1) {
            throw new IllegalArgumentException(where + ": field " + name + " must be a positive integer, got " + v);
        }
        return v.asInt();
    }

    private static long longField(JsonNode n, String name, String where) {
        JsonNode v = n.get(name);
        if (v == null || !v.isIntegralNumber()) {
            throw new IllegalArgumentException(where + ": field " + name + " must be an integer, got " + v);
        }
        return v.asLong();
    }
}
