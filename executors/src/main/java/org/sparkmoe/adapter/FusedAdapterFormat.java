package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.JsonNode;
import org.sparkmoe.io.CheckpointLayout.Projection;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;

/**
 * A PEFT adapter on transformers 5's fused expert parameters ({@code target_parameters} naming
 * {@code mlp.experts.gate_up_proj} and/or {@code mlp.experts.down_proj}), as adapter_config.json describes it.
 *
 * <p>PEFT wraps each targeted 3-D parameter [E, rows, cols] in a {@code ParamWrapper}; two on one module nest, the
 * inner one saving its LoRA matrices under {@code base_model.model.model.layers.L.mlp.experts.base_layer.lora_A.weight}
 * and the outer one without {@code base_layer.}. Which parameter is inner is not the saved target_parameters order
 * (PEFT 0.21 saved [down_proj, gate_up_proj] for an adapter whose inner wrapper holds gate_up_proj, the parameter
 * transformers declares first); {@link FusedAdapterTensors} tells them apart by their shapes. The shapes changed in
 * PEFT 0.19.1 ({@link Generation}).
 *
 * @param parameters  the targeted parameters in target_parameters order: "gate_up_proj", "down_proj"
 * @param peftVersion adapter_config.json's peft_version, or null when it has none
 */
public record FusedAdapterFormat(List<String> parameters, String peftVersion) implements Serializable {
    public static final String GATE_UP = "gate_up_proj";
    public static final String DOWN = "down_proj";

    /**
     * How PEFT lays out lora_A and lora_B of a 3-D expert parameter [E, rows, cols] (gate_up_proj: rows 2I, cols D;
     * down_proj: rows D, cols I). In both, lora_A's rows are expert-major (row e·r + j) and lora_B's columns
     * rank-major (column j·E + e).
     */
    public enum Generation {
        /** PEFT ≤ 0.19.0: lora_A [E·r, rows], lora_B [cols, r·E], ΔW_e = A_eᵀ · B_eᵀ. */
        BEFORE_0_19_1,
        /** PEFT ≥ 0.19.1: lora_A [E·r, cols], lora_B [rows, r·E], ΔW_e = B_e · A_e. */
        FROM_0_19_1
    }

    /** The format adapter_config.json's text describes, or null when it targets no parameters. */
    static FusedAdapterFormat parse(String jsonText, String source) {
        try {
            return parse(new com.fasterxml.jackson.databind.ObjectMapper().readTree(jsonText), source);
        } catch (java.io.IOException e) {
            throw new AdapterFormatException(source + ": malformed JSON: " + e.getMessage().lines().findFirst().orElse(""));
        }
    }

    /** The format adapter_config.json {@code root} describes, or null when it targets no parameters. */
    static FusedAdapterFormat parse(JsonNode root, String source) {
        JsonNode node = root.get("target_parameters");
        if (node == null || node.isNull() || (node.isArray() && node.isEmpty())) {
            return null;
        }
        if (!node.isArray()) {
            throw new AdapterFormatException(source + ": target_parameters must be a list of parameter names, got " + node);
        }
        List<String> parameters = new ArrayList<>();
        for (JsonNode entry : node) {
            String name = entry.isTextual() ? entry.asText() : "";
            String parameter = name.equals("mlp.experts." + GATE_UP) || name.endsWith(".mlp.experts." + GATE_UP)
                    ? GATE_UP : name.equals("mlp.experts." + DOWN) || name.endsWith(".mlp.experts." + DOWN) ? DOWN : null;
            if (parameter == null) {
                throw new AdapterFormatException(source + ": unsupported target_parameters entry " + entry
                        + " (SparkMoE reads LoRA on mlp.experts.gate_up_proj and mlp.experts.down_proj)");
            }
            if (parameters.contains(parameter)) {
                throw new AdapterFormatException(source + ": target_parameters names " + parameter + " twice");
            }
            parameters.add(parameter);
        }
        JsonNode modules = root.get("target_modules");
        if (modules != null && !modules.isNull() && !(modules.isArray() && modules.isEmpty())) {
            throw new AdapterFormatException(source + ": target_modules " + modules + " together with target_parameters "
                    + node + " is not supported (SparkMoE adapts the expert parameters only)");
        }
        JsonNode version = root.get("peft_version");
        return new FusedAdapterFormat(List.copyOf(parameters),
                version == null || version.isNull() ? null : version.asText());
    }

    /** The expert projections adapted: gate and up for gate_up_proj, down for down_proj. */
    public List<Projection> targets() {
        EnumSet<Projection> out = EnumSet.noneOf(Projection.class);
        if (parameters.contains(GATE_UP)) {
            out.add(Projection.GATE);
            out.add(Projection.UP);
        }
        if (parameters.contains(DOWN)) {
            out.add(Projection.DOWN);
        }
        return List.copyOf(out);
    }

    /** The generation peft_version names, or null without one. */
    public Generation declaredGeneration() {
        if (peftVersion == null) {
            return null;
        }
        String[] parts = peftVersion.split("[^0-9]+");
        int[] v = new int[3];
        for (int i = 0; i < 3 && i < parts.length; i++) {
            v[i] = parts[i].isEmpty() ? 0 : Integer.parseInt(parts[i]);
        }
        boolean atLeast = v[0] != 0 ? v[0] > 0 : v[1] != 19 ? v[1] > 19 : v[2] >= 1;
        return atLeast ? Generation.FROM_0_19_1 : Generation.BEFORE_0_19_1;
    }
}
