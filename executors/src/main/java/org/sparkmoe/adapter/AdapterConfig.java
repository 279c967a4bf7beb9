package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelSchema;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import java.util.stream.Collectors;

/**
 * What a PEFT LoRA adapter of a MoE model holds, and its {@code adapter_config.json}: rank r, lora_alpha
 * (scale = lora_alpha / r, PEFT's default, not rslora), the expert projections adapted in every expert of every
 * MoE layer (and the same projections of the shared expert, when adapted), and whether the router is trained (saved
 * under PEFT's modules_to_save).
 *
 * @param r                   R, the LoRA rank (≥ 1)
 * @param loraAlpha           lora_alpha (> 0)
 * @param targets             adapted projections, in the order gate (w1), up (w3), down (w2)
 * @param trainRouter         whether the adapter replaces each MoE layer's router weight
 * @param baseModelNameOrPath the base model, as PEFT records it (may be null)
 * @param sharedExpert        whether the shared expert's {@code targets} are adapted too (qwen2_moe's
 *                            {@code mlp.shared_expert}, glm4_moe's {@code mlp.shared_experts})
 */
public record AdapterConfig(int r, double loraAlpha, List<Projection> targets, boolean trainRouter,
                            String baseModelNameOrPath, boolean sharedExpert) implements Serializable {

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    public AdapterConfig {
        if (r < 1) {
            throw new AdapterFormatException("LoRA rank r must be ≥ 1, got " + r);
        }
        if (!(loraAlpha > 0) || Double.isInfinite(loraAlpha)) {
            throw new AdapterFormatException("lora_alpha must be a positive number, got " + loraAlpha);
        }
        if (targets.isEmpty()) {
            throw new AdapterFormatException("an adapter must target at least one expert projection");
        }
        Set<Projection> distinct = EnumSet.copyOf(targets);
        if (distinct.size() != targets.size()) {
            throw new AdapterFormatException("target projections repeat: " + targets);
        }
        targets = List.copyOf(distinct); // EnumSet iterates in declaration order: GATE, UP, DOWN
    }

    /** An adapter of the routed experts only. */
    public AdapterConfig(int r, double loraAlpha, List<Projection> targets, boolean trainRouter,
                         String baseModelNameOrPath) {
        this(r, loraAlpha, targets, trainRouter, baseModelNameOrPath, false);
    }

    /** Throws unless the model has a shared expert when this adapts one. */
    void checkFits(ModelConfig model) {
        if (sharedExpert && !model.hasSharedExpert()) {
            throw new AdapterFormatException("the adapter adapts the shared expert, but model_type "
                    + typeName(model) + " has none");
        }
    }

    /** lora_alpha / r. */
    public double scale() {
        return loraAlpha / r;
    }

    /**
     * PEFT's LoraConfig as JSON. target_modules is a list of projection names for Mixtral (w1/w2/w3 only exist in
     * experts) and a regex on expert module paths for Qwen2-MoE, Qwen3-MoE and OLMoE (gate_proj/up_proj/down_proj also
     * name the shared expert and dense MLPs, which a plain name would match too); with the shared expert adapted, the
     * regex names its module too ({@code mlp\.(experts\.(\d+\.)?|shared_experts\.)(gate_proj|...)}).
     */
    public String toJson(ModelConfig model) {
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        ObjectNode root = JSON.createObjectNode();
        root.putObject("alpha_pattern");
        root.putNull("auto_mapping");
        if (baseModelNameOrPath == null) {
            root.putNull("base_model_name_or_path");
        } else {
            root.put("base_model_name_or_path", baseModelNameOrPath);
        }
        root.put("bias", "none");
        root.put("fan_in_fan_out", false);
        root.put("inference_mode", true);
        root.put("init_lora_weights", true);
        root.putNull("layer_replication");
        root.putNull("layers_pattern");
        root.putNull("layers_to_transform");
        root.putObject("loftq_config");
        if (loraAlpha == Math.rint(loraAlpha) && loraAlpha <= Integer.MAX_VALUE) {
            root.put("lora_alpha", (int) loraAlpha);
        } else {
            root.put("lora_alpha", loraAlpha);
        }
        root.put("lora_dropout", 0.0);
        root.putNull("megatron_config");
        root.put("megatron_core", "megatron.core");
        if (trainRouter) {
            root.putArray("modules_to_save").add(AdapterKeys.routerModule(model.modelType));
        } else {
            root.putNull("modules_to_save");
        }
        root.put("peft_type", "LORA");
        root.put("r", r);
        root.putObject("rank_pattern");
        root.putNull("revision");
        if (model.modelType == ModelConfig.ModelType.MIXTRAL) {
            ArrayNode names = root.putArray("target_modules");
            targets.forEach(p -> names.add(layout.projectionName(p)));
        } else {
            String names = targets.stream().map(layout::projectionName).collect(Collectors.joining("|"));
            // the expert index is optional: PEFT on transformers 5 (fused experts) resolves a regex by probing the
            // per-layer name model.layers.L.mlp.experts.<proj>, without an index, against it
            String modules = sharedExpert ? "(experts\\.(\\d+\\.)?|" + layout.sharedExpertName() + "\\.)"
                    : "experts\\.(\\d+\\.)?";
            root.put("target_modules", "model\\.layers\\.\\d+\\.mlp\\." + modules + "(" + names + ")");
        }
        root.put("task_type", "CAUSAL_LM");
        root.put("use_dora", false);
        root.put("use_rslora", false);
        try {
            return JSON.writeValueAsString(root) + "\n";
        } catch (IOException e) {
            throw new UncheckedIOException("serialising adapter_config.json", e);
        }
    }

    /**
     * Reads an adapter_config.json written by PEFT or by {@link #toJson}, checking that every field fits what
     * SparkMoE applies: LORA, no rslora/DoRA/bias/fan_in_fan_out/per-layer patterns, target_modules naming whole
     * expert projections of this model and modules_to_save naming only its routers.
     */
    public static AdapterConfig parse(String jsonText, String source, ModelConfig model) {
        JsonNode root;
        try {
            root = JSON.readTree(jsonText);
        } catch (IOException e) {
            throw new AdapterFormatException(source + ": malformed JSON: " + e.getMessage().lines().findFirst().orElse(""));
        }
        if (root == null || !root.isObject()) {
            throw new AdapterFormatException(source + ": expected a JSON object");
        }
        Fields f = new Fields(root, source);
        String peftType = f.text("peft_type");
        if (!"LORA".equals(peftType)) {
            throw new AdapterFormatException(source + ": peft_type must be \"LORA\", got \"" + peftType + "\"");
        }
        f.requireAbsentOr("use_rslora", JsonNode::isBoolean, v -> !v.asBoolean(), "false (rsLoRA scaling is not supported)");
        f.requireAbsentOr("use_dora", JsonNode::isBoolean, v -> !v.asBoolean(), "false (DoRA is not supported)");
        f.requireAbsentOr("fan_in_fan_out", JsonNode::isBoolean, v -> !v.asBoolean(), "false");
        f.requireAbsentOr("bias", JsonNode::isTextual, v -> v.asText().equals("none"), "\"none\"");
        f.requireAbsentOr("layers_to_transform", v -> false, v -> false, "null (every MoE layer is adapted)");
        f.requireAbsentOr("rank_pattern", JsonNode::isObject, JsonNode::isEmpty, "{} (one rank for all modules)");
        f.requireAbsentOr("alpha_pattern", JsonNode::isObject, JsonNode::isEmpty, "{} (one alpha for all modules)");
        JsonNode rNode = f.required("r");
        if (!rNode.isIntegralNumber() || !rNode.canConvertToInt() || rNode.asInt() < 1) {
            throw new AdapterFormatException(source + ": r must be an integer ≥ 1, got " + rNode);
        }
        JsonNode alphaNode = f.required("lora_alpha");
        if (!alphaNode.isNumber() || !(alphaNode.asDouble() > 0)) {
            throw new AdapterFormatException(source + ": lora_alpha must be a positive number, got " + alphaNode);
        }
        JsonNode base = root.get("base_model_name_or_path");
        String baseModel = base == null || base.isNull() ? null : base.asText();
        List<String> modules = moduleNames(model);
        FusedAdapterFormat fused = FusedAdapterFormat.parse(root, source);
        List<Projection> targets = fused != null ? fused.targets()
                : targets(f.required("target_modules"), source, model, modules);
        boolean shared = fused == null && sharedExpert(f.required("target_modules"), source, model, targets);
        boolean trainRouter = trainsRouter(root.get("modules_to_save"), source, model, modules);
        return new AdapterConfig(rNode.asInt(), alphaNode.asDouble(), targets, trainRouter, baseModel, shared);
    }

    /** Every module path (weight key without .weight/.bias) of the model, for matching PEFT's module selectors. */
    private static List<String> moduleNames(ModelConfig model) {
        Set<String> names = new LinkedHashSet<>();
        for (String key : ModelSchema.expected(model).keySet()) {
            names.add(key.substring(0, key.lastIndexOf('.')));
        }
        return new ArrayList<>(names);
    }

    private static List<Projection> targets(JsonNode node, String source, ModelConfig model, List<String> modules) {
        Predicate<String> selects = selector(node, source, "target_modules");
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        List<Projection> targets = new ArrayList<>();
        for (Projection p : Projection.values()) {
            List<String> experts = expertModules(model, layout, p);
            long matched = experts.stream().filter(selects).count();
            if (matched == experts.size()) {
                targets.add(p);
            } else if (matched > 0) {
                throw new AdapterFormatException(source + ": target_modules " + node + " selects "
                        + layout.projectionName(p) + " in only " + matched + " of " + experts.size()
                        + " experts; SparkMoE adapts a projection in every expert of every MoE layer");
            }
        }
        for (String module : modules) {
            if (selects.test(module) && !isExpertProjection(module, model, layout)
                    && !sharedModules(model, layout).contains(module)) {
                throw new AdapterFormatException(source + ": target_modules " + node + " selects " + module
                        + ", which is not an expert projection of this " + typeName(model) + " model (SparkMoE adapts "
                        + expertNames(layout) + " of the experts" + (model.hasSharedExpert() ? " and shared expert" : "")
                        + " only)");
            }
        }
        if (targets.isEmpty()) {
            throw new AdapterFormatException(source + ": target_modules " + node + " selects no expert projection of this "
                    + typeName(model) + " model (its expert projections: " + expertNames(layout)
                    + "; an adapter for a different architecture?)");
        }
        return targets;
    }

    /**
     * Whether target_modules selects the shared expert: then it must select exactly the routed targets in the shared
     * expert of every MoE layer (SparkMoE gives the shared expert the routed experts' LoRA projections).
     */
    private static boolean sharedExpert(JsonNode node, String source, ModelConfig model, List<Projection> targets) {
        if (!model.hasSharedExpert()) {
            return false;
        }
        Predicate<String> selects = selector(node, source, "target_modules");
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        List<Projection> selected = new ArrayList<>();
        long matched = 0;
        long total = 0;
        for (Projection p : Projection.values()) {
            List<String> shared = new ArrayList<>();
            for (int l = 0; l < model.num_hidden_layers; l++) {
                if (model.isMoeLayer(l)) {
                    shared.add(layout.sharedExpertModule(l, p));
                }
            }
            long hits = shared.stream().filter(selects).count();
            matched += hits;
            if (targets.contains(p)) {
                total += shared.size();
            }
            if (hits == shared.size()) {
                selected.add(p);
            }
        }
        if (matched == 0) {
            return false;
        }
        if (!selected.equals(targets) || matched != total) {
            throw new AdapterFormatException(source + ": target_modules " + node + " selects " + matched
                    + " shared-expert projections; SparkMoE adapts the shared expert's " + targets.stream()
                    .map(layout::projectionName).collect(Collectors.joining(", ")) + " (the routed experts' targets) in"
                    + " every MoE layer, or none of it");
        }
        return true;
    }

    private static List<String> sharedModules(ModelConfig model, CheckpointLayout layout) {
        List<String> out = new ArrayList<>();
        if (!model.hasSharedExpert()) {
            return out;
        }
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (model.isMoeLayer(l)) {
                for (Projection p : Projection.values()) {
                    out.add(layout.sharedExpertModule(l, p));
                }
            }
        }
        return out;
    }

    private static boolean trainsRouter(JsonNode node, String source, ModelConfig model, List<String> modules) {
        if (node == null || node.isNull() || (node.isArray() && node.isEmpty())) {
            return false;
        }
        if (!node.isArray()) {
            throw new AdapterFormatException(source + ": modules_to_save must be a list of module names or null, got " + node);
        }
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        List<String> checkpointRouters = new ArrayList<>();
        List<String> moduleRouters = new ArrayList<>();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (model.isMoeLayer(l)) {
                String gate = layout.routerGate(l);
                checkpointRouters.add(gate.substring(0, gate.length() - ".weight".length()));
                moduleRouters.add("model.layers." + l + "." + AdapterKeys.routerModule(model.modelType));
            }
        }
        for (JsonNode entry : node) {
            if (!entry.isTextual()) {
                throw new AdapterFormatException(source + ": modules_to_save entries must be module names, got " + entry);
            }
            String name = entry.asText();
            List<String> hits = modules.stream().filter(m -> suffixMatch(m, name)).toList();
            if (!hits.isEmpty() && !checkpointRouters.containsAll(hits)) {
                throw unknownSaved(source, name, model);
            }
            if (hits.isEmpty()) {
                hits = moduleRouters.stream().filter(m -> suffixMatch(m, name)).toList();
            }
            if (hits.isEmpty()) {
                throw unknownSaved(source, name, model);
            }
            if (hits.size() != checkpointRouters.size()) {
                throw new AdapterFormatException(source + ": modules_to_save \"" + name + "\" names the router of only "
                        + hits.size() + " of " + checkpointRouters.size() + " MoE layers");
            }
        }
        return true;
    }

    private static AdapterFormatException unknownSaved(String source, String name, ModelConfig model) {
        return new AdapterFormatException(source + ": unknown module \"" + name + "\" in modules_to_save (SparkMoE"
                + " saves only the routers, \"" + AdapterKeys.routerModule(model.modelType) + "\", of this "
                + typeName(model) + " model)");
    }

    /** PEFT's target_modules / modules_to_save matching: a regex string is full-matched, a list by name suffix. */
    private static Predicate<String> selector(JsonNode node, String source, String field) {
        if (node.isTextual()) {
            try {
                Pattern pattern = Pattern.compile(node.asText());
                return module -> pattern.matcher(module).matches();
            } catch (PatternSyntaxException e) {
                throw new AdapterFormatException(source + ": " + field + " is not a valid regex: " + node);
            }
        }
        if (!node.isArray()) {
            throw new AdapterFormatException(source + ": " + field + " must be a list of module names or a regex, got " + node);
        }
        List<String> names = new ArrayList<>();
        for (JsonNode entry : node) {
            if (!entry.isTextual()) {
                throw new AdapterFormatException(source + ": " + field + " entries must be module names, got " + entry);
            }
            names.add(entry.asText());
        }
        return module -> names.stream().anyMatch(name -> suffixMatch(module, name));
    }

    private static boolean suffixMatch(String module, String name) {
        return module.equals(name) || module.endsWith("." + name);
    }

    private static List<String> expertModules(ModelConfig model, CheckpointLayout layout, Projection p) {
        List<String> out = new ArrayList<>();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (model.isMoeLayer(l)) {
                for (int e = 0; e < model.num_experts; e++) {
                    out.add(layout.expertModule(l, e, p));
                }
            }
        }
        return out;
    }

    private static boolean isExpertProjection(String module, ModelConfig model, CheckpointLayout layout) {
        for (Projection p : Projection.values()) {
            if (expertModules(model, layout, p).contains(module)) {
                return true;
            }
        }
        return false;
    }

    private static String expertNames(CheckpointLayout layout) {
        return layout.projectionName(Projection.GATE) + ", " + layout.projectionName(Projection.UP) + ", "
                + layout.projectionName(Projection.DOWN);
    }

    static String typeName(ModelConfig model) {
        return model.modelType.name().toLowerCase(java.util.Locale.ROOT);
    }

    /** Field access with errors naming the file and field. */
    private record Fields(JsonNode root, String source) {
        JsonNode required(String name) {
            JsonNode v = root.get(name);
            if (v == null || v.isNull()) {
                throw new AdapterFormatException(source + ": missing field " + name);
            }
            return v;
        }

        String text(String name) {
            JsonNode v = required(name);
            if (!v.isTextual()) {
                throw new AdapterFormatException(source + ": field " + name + " must be a string, got " + v);
            }
            return v.asText();
        }

        /** Null or absent is fine; otherwise the value must have the right type and pass {@code ok}. */
        void requireAbsentOr(String name, Predicate<JsonNode> type, Predicate<JsonNode> ok, String expected) {
            JsonNode v = root.get(name);
            if (v != null && !v.isNull() && !(type.test(v) && ok.test(v))) {
                throw new AdapterFormatException(source + ": unsupported " + name + " " + v + ", expected " + expected);
            }
        }
    }
}
