package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.sparkmoe.io.ModelConfig;

import java.util.Arrays;
import java.util.Locale;

/**
 * What {@code surgery prune} reads from calibrate's {@code expert-scores.json}: per MoE layer (in layer order) the
 * tokens routed to each expert, its frequency, REAP saliency and EAN. Parsing checks the file against the model
 * (model type, MoE layer indices, expert count) and names the culprit field.
 */
public final class ExpertScores implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    /** What an expert is ranked by. */
    public enum Method {
        /** REAP saliency: mean routing weight × expert output norm over the routed tokens. */
        REAP("reap"),
        /** Routed tokens / tokens. */
        FREQUENCY("frequency"),
        /** Expert activation norm: Σ output norm over the routed tokens. */
        EAN("ean");

        public final String field;

        Method(String field) {
            this.field = field;
        }
    }

    private final long[][] routed;     // [MoE layers][E]
    private final double[][][] scores; // [Method][MoE layers][E]

    private ExpertScores(long[][] routed, double[][][] scores) {
        this.routed = routed;
        this.scores = scores;
    }

    /** Parses {@code json} (named {@code source} in errors) and checks it against the model. */
    public static ExpertScores parse(String json, String source, ModelConfig config, int[] moeLayers) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(source + ": not valid JSON (" + e.getOriginalMessage() + ")");
        }
        if (root == null || !root.isObject() || !root.path("model_type").isTextual() || !root.path("layers").isArray()) {
            throw new IllegalArgumentException(source + ": expected expert-scores.json from 'sparkmoe calibrate' "
                    + "(an object with model_type and layers)");
        }
        String type = config.modelType.name().toLowerCase(Locale.ROOT);
        if (!root.get("model_type").asText().equals(type)) {
            throw new IllegalArgumentException(source + ": scores of a " + root.get("model_type").asText()
                    + " model, --model is " + type);
        }
        JsonNode layers = root.get("layers");
        int[] found = new int[layers.size()];
        for (int l = 0; l < found.length; l++) {
            found[l] = layers.get(l).path("layer").asInt(-1);
        }
        if (!Arrays.equals(found, moeLayers)) {
            throw new IllegalArgumentException(source + ": scores of MoE layers " + Arrays.toString(found)
                    + ", --model has " + Arrays.toString(moeLayers));
        }
        int experts = config.num_experts;
        long[][] routed = new long[moeLayers.length][];
        double[][][] scores = new double[Method.values().length][moeLayers.length][];
        for (int l = 0; l < moeLayers.length; l++) {
            JsonNode n = layers.get(l);
            String where = source + ": layers[" + l + "]";
            if (n.path("experts").asInt(-1) != experts) {
                throw new IllegalArgumentException(where + ": scores of " + n.get("experts") + " experts, --model has "
                        + experts);
            }
            routed[l] = JsonArrays.longs(n, "routed_tokens", experts, where);
            for (Method m : Method.values()) {
                scores[m.ordinal()][l] = JsonArrays.doubles(n, m.field, experts, where);
            }
        }
        return new ExpertScores(routed, scores);
    }

    public int moeLayers() {
        return routed.length;
    }

    /** [E] tokens routed to each expert of MoE layer l. */
    public long[] routed(int moeLayer) {
        return routed[moeLayer].clone();
    }

    /** [E] the scores of MoE layer l by {@code method}. */
    public double[] scores(Method method, int moeLayer) {
        return scores[method.ordinal()][moeLayer].clone();
    }

}
