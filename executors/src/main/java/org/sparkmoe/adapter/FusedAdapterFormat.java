package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.JsonNode;
import org.sparkmoe.io.CheckpointLayout.Projection;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

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
 * @param peftVersion the PEFT release that saved it: --peft-version when given, else adapter_config.json's
 *                    peft_version, or null when neither says
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
        String peftVersion = version == null || version.isNull() ? null : version.asText();
        if (peftVersion != null) {
            generationOf(peftVersion, source + ": peft_version");
        }
        return new FusedAdapterFormat(List.copyOf(parameters), peftVersion);
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
        return peftVersion == null ? null : generationOf(peftVersion, "peft_version");
    }

    /** This format with {@code version} (a --peft-version) in place of adapter_config.json's peft_version. */
    public FusedAdapterFormat withPeftVersion(String version) {
        generationOf(version, "--peft-version");
        return new FusedAdapterFormat(parameters, version);
    }

    /**
     * The shape generation of the PEFT release {@code version} (major.minor[.patch], an optional pre-release or
     * local suffix such as 0.19.1rc1 or 0.21.0.dev0); throws naming {@code what} when it is no such version.
     */
    public static Generation generationOf(String version, String what) {
        Matcher m = VERSION.matcher(version == null ? "" : version);
        if (!m.matches()) {
            throw new AdapterFormatException(what + " must be a PEFT version such as 0.19.0 or 0.21.0, got '"
                    + version + "'");
        }
        long major = Long.parseLong(m.group(1));
        long minor = Long.parseLong(m.group(2));
        long patch = m.group(3) == null ? 0 : Long.parseLong(m.group(3));
        boolean atLeast = major != 0 ? major > 0 : minor != 19 ? minor > 19 : patch >= 1;
        return atLeast ? Generation.FROM_0_19_1 : Generation.BEFORE_0_19_1;
    }

    private static final Pattern VERSION =
            Pattern.compile("(\\d{1,9})\\.(\\d{1,9})(?:\\.(\\d{1,9}))?(?:[.+\\-]?[A-Za-z][0-9A-Za-z.+\\-@]*)?");
}
