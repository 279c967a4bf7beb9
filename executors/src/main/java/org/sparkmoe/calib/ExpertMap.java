package org.sparkmoe.calib;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * How the E experts of each MoE layer are merged into E' groups (written by expert surgery, read by
 * {@code retrain-router}). The JSON file:
 * <pre>
 * {"layers": [ {"groups": [[0, 3], [1], [2, 5, 6], [4, 7]]}, ... ]}
 * </pre>
 * One entry per MoE layer, in layer order. Group g lists the original experts it replaces; every original
 * expert 0..E-1 is in exactly one group and no group is empty. A router retrained to this map has E' outputs,
 * output g in the order the groups are listed, and its teacher distribution is the original one summed over
 * each group.
 *
 * <p>A layer may also list {@code "masked"}: new experts (group indices) the checkpoint holds but its router never
 * selects ({@code surgery prune --global}); {@code retrain-router} refuses such a map.
 */
public final class ExpertMap {
    private final int[][][] groups; // [MoE layers][E'][members]
    private final int[][] masked;   // [MoE layers][] masked new experts, ascending

    private ExpertMap(int[][][] groups, int[][] masked) {
        this.groups = groups;
        this.masked = masked;
    }

    /** The map that keeps every expert on its own (E groups of one) for each of the given layer sizes. */
    public static ExpertMap identity(int[] expertsPerLayer) {
        int[][][] groups = new int[expertsPerLayer.length][][];
        for (int l = 0; l < expertsPerLayer.length; l++) {
            groups[l] = new int[expertsPerLayer[l]][];
            for (int e = 0; e < expertsPerLayer[l]; e++) {
                groups[l][e] = new int[] {e};
            }
        }
        return new ExpertMap(groups, new int[groups.length][0]);
    }

    /**
     * The map with the given groups per MoE layer ([layers][E'][members]), validated like a parsed file against
     * the experts per MoE layer.
     */
    public static ExpertMap of(int[][][] groups, int[] expertsPerLayer) {
        return of(groups, new int[groups.length][0], expertsPerLayer);
    }

    /** As {@link #of(int[][][], int[])}, with the masked new experts of each layer ([layers][]). */
    public static ExpertMap of(int[][][] groups, int[][] masked, int[] expertsPerLayer) {
        return parse(new ExpertMap(groups, masked).toJson(), "expert map", expertsPerLayer);
    }

    /**
     * Parses and validates an expert map against the model's experts per MoE layer.
     *
     * @param source names the file in error messages
     */
    public static ExpertMap parse(String json, String source, int[] expertsPerLayer) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(source + ": not valid JSON (" + e.getOriginalMessage() + ")");
        }
        if (root == null || !root.isObject() || !root.path("layers").isArray()) {
            throw new IllegalArgumentException(source + ": expected an object {\"layers\": [{\"groups\": [[...], ...]}, ...]}");
        }
        JsonNode layers = root.get("layers");
        if (layers.size() != expertsPerLayer.length) {
            throw new IllegalArgumentException(source + ": has " + layers.size() + " layers, the model has "
                    + expertsPerLayer.length + " MoE layers");
        }
        int[][][] groups = new int[layers.size()][][];
        int[][] masked = new int[layers.size()][];
        for (int l = 0; l < layers.size(); l++) {
            groups[l] = parseLayer(layers.get(l), source + ": layers[" + l + "]", expertsPerLayer[l]);
            masked[l] = parseMasked(layers.get(l), source + ": layers[" + l + "]", groups[l].length);
        }
        return new ExpertMap(groups, masked);
    }

    private static int[][] parseLayer(JsonNode layer, String where, int experts) {
        JsonNode list = layer.path("groups");
        if (!list.isArray() || list.isEmpty()) {
            throw new IllegalArgumentException(where + ": expected a non-empty \"groups\" array of arrays of expert indices");
        }
        int[] groupOf = new int[experts];
        Arrays.fill(groupOf, -1);
        int[][] groups = new int[list.size()][];
        for (int g = 0; g < list.size(); g++) {
            JsonNode members = list.get(g);
            if (!members.isArray() || members.isEmpty()) {
                throw new IllegalArgumentException(where + ".groups[" + g + "]: expected a non-empty array of expert indices");
            }
            groups[g] = new int[members.size()];
            for (int i = 0; i < members.size(); i++) {
                JsonNode m = members.get(i);
                if (!m.isInt() || m.asInt() < 0 || m.asInt() >= experts) {
                    throw new IllegalArgumentException(where + ".groups[" + g + "]: expert " + m + " is not an index in [0, "
                            + experts + ")");
                }
                int e = m.asInt();
                if (groupOf[e] >= 0) {
                    throw new IllegalArgumentException(where + ": expert " + e + " is in groups " + groupOf[e] + " and " + g
                            + "; expected exactly one");
                }
                groupOf[e] = g;
                groups[g][i] = e;
            }
        }
        for (int e = 0; e < experts; e++) {
            if (groupOf[e] < 0) {
                throw new IllegalArgumentException(where + ": expert " + e + " is in no group; expected every expert of 0.."
                        + (experts - 1) + " in exactly one");
            }
        }
        return groups;
    }

    /** The optional "masked" list: distinct new experts in [0, groups), ascending. */
    private static int[] parseMasked(JsonNode layer, String where, int groups) {
        JsonNode list = layer.path("masked");
        if (list.isMissingNode()) {
            return new int[0];
        }
        if (!list.isArray()) {
            throw new IllegalArgumentException(where + ".masked: expected an array of new expert indices");
        }
        int[] out = new int[list.size()];
        for (int i = 0; i < out.length; i++) {
            JsonNode m = list.get(i);
            if (!m.isInt() || m.asInt() < 0 || m.asInt() >= groups || (i > 0 && m.asInt() <= out[i - 1])) {
                throw new IllegalArgumentException(where + ".masked: " + m + " is not an ascending new expert index in [0, "
                        + groups + ")");
            }
            out[i] = m.asInt();
        }
        return out;
    }

    public int layers() {
        return groups.length;
    }

    /** E' of MoE layer {@code l}. */
    public int groups(int l) {
        return groups[l].length;
    }

    /** The new experts of MoE layer {@code l} that are held but never selected (ascending; usually none). */
    public int[] masked(int l) {
        return masked[l].clone();
    }

    public int[] members(int l, int group) {
        return groups[l][group].clone();
    }

    /** The 0/1 matrix [E, E'] with m[e][g] = 1 when expert e is in group g: grouped = teacher · m. */
    public float[][] membership(int l, int experts) {
        float[][] m = new float[experts][groups[l].length];
        for (int g = 0; g < groups[l].length; g++) {
            for (int e : groups[l][g]) {
                m[e][g] = 1f;
            }
        }
        return m;
    }

    public String toJson() {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        ArrayNode layers = root.putArray("layers");
        for (int l = 0; l < groups.length; l++) {
            ObjectNode entry = layers.addObject();
            ArrayNode list = entry.putArray("groups");
            if (masked[l].length > 0) {
                ArrayNode m = entry.putArray("masked");
                java.util.Arrays.stream(masked[l]).forEach(m::add);
            }
            for (int[] group : groups[l]) {
                ArrayNode members = list.addArray();
                for (int e : group) {
                    members.add(e);
                }
            }
        }
        try {
            return json.writeValueAsString(root) + "\n";
        } catch (IOException e) {
            throw new IllegalStateException("serialising an expert map", e);
        }
    }

    /** All layers' group lists, for tests and reports. */
    public List<int[][]> all() {
        List<int[][]> out = new ArrayList<>();
        for (int[][] layer : groups) {
            out.add(layer.clone());
        }
        return out;
    }
}
