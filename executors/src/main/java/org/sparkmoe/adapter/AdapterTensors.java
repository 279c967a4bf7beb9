package org.sparkmoe.adapter;

import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads the per-expert tensors of an adapter_model.safetensors into the stacked trainable state, checking every
 * key against what the model and adapter_config.json imply and diagnosing the ones that do not fit.
 */
final class AdapterTensors {
    private static final Pattern EXPERT_KEY = Pattern.compile(
            "base_model\\.model\\.model\\.layers\\.(\\d+)\\.(\\w+)\\.experts\\.(\\d+)\\.(\\w+)\\.lora_([AB])\\.weight");

    /** Where one per-expert tensor goes: slice {@code expert} of stacked {@code key} (-1: the whole tensor). */
    private record Slot(String key, int expert, long[] shape, boolean isA) {
    }

    private final ModelConfig model;
    private final AdapterConfig config;
    private final Path source;
    private final CheckpointLayout layout;
    private final Map<String, Slot> slots = new LinkedHashMap<>();
    /** Router keys under transformers 4's Mixtral module path, read as the current key they map to. */
    private final Map<String, String> legacyRouterKeys = new LinkedHashMap<>();
    /** A trained sigmoid router's e_score_correction_bias key → its layer: shape-checked, the value not used. */
    private final Map<String, Integer> routerBiasKeys = new LinkedHashMap<>();

    AdapterTensors(ModelConfig model, AdapterConfig config, Path source) {
        this.model = model;
        this.config = config;
        this.source = source;
        this.layout = new CheckpointLayout(model.modelType);
        long r = config.r();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (!model.isMoeLayer(l)) {
                continue;
            }
            for (int e = 0; e < model.num_experts; e++) {
                for (Projection p : config.targets()) {
                    long in = PeftAdapter.inFeatures(model, p);
                    long out = PeftAdapter.outFeatures(model, p);
                    slots.put(AdapterKeys.peftA(layout, l, e, p), new Slot(AdapterKeys.loraA(layout, l, p), e, new long[] {r, in}, true));
                    slots.put(AdapterKeys.peftB(layout, l, e, p), new Slot(AdapterKeys.loraB(layout, l, p), e, new long[] {out, r}, false));
                }
            }
            if (config.sharedExpert()) {
                for (Projection p : config.targets()) {
                    long in = PeftAdapter.sharedIn(model, p);
                    long out = PeftAdapter.sharedOut(model, p);
                    slots.put(AdapterKeys.peftSharedA(layout, l, p),
                            new Slot(AdapterKeys.sharedLoraA(layout, l, p), 0, new long[] {r, in}, true));
                    slots.put(AdapterKeys.peftSharedB(layout, l, p),
                            new Slot(AdapterKeys.sharedLoraB(layout, l, p), 0, new long[] {out, r}, false));
                }
            }
            if (config.trainRouter()) {
                Slot router = new Slot(layout.routerGate(l), -1, new long[] {model.num_experts, model.hidden_size}, false);
                slots.put(AdapterKeys.peftRouter(l), router);
                legacyRouterKeys.put(AdapterKeys.legacyPeftRouter(layout, l), AdapterKeys.peftRouter(l));
                if (model.routing.scoreCorrectionBias()) {
                    routerBiasKeys.put(AdapterKeys.peftRouterBias(l), l);
                }
            }
        }
    }

    /** The stacked state (contract order) assembled from {@code file}. */
    LinkedHashMap<String, INDArray> stack(SafeTensorsFile file) {
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        PeftAdapter.expectedState(model, config).forEach((key, shape) ->
                state.put(key, Nd4j.create(DataType.FLOAT, shape, 'c')));
        for (String name : file.names()) {
            if (routerBiasKeys.containsKey(name)) {
                checkRouterBias(file, source, model, routerBiasKeys.get(name));
                continue;
            }
            Slot slot = slots.get(legacyRouterKeys.getOrDefault(name, name));
            if (slot == null) {
                throw new AdapterFormatException(source + ": " + diagnose(name));
            }
            long[] shape = file.info(name).shape();
            if (!Arrays.equals(shape, slot.shape())) {
                throw new AdapterFormatException(source + ": " + shapeError(name, shape, slot));
            }
            INDArray stacked = state.get(slot.key());
            (slot.expert() < 0 ? stacked : stacked.slice(slot.expert())).assign(file.readFloat(name));
        }
        for (String name : slots.keySet()) {
            boolean legacyPresent = legacyRouterKeys.entrySet().stream()
                    .anyMatch(e -> e.getValue().equals(name) && file.has(e.getKey()));
            if (!file.has(name) && !legacyPresent) {
                throw new AdapterFormatException(source + ": missing " + name + " (adapter_config.json targets "
                                + projectionNames() + (config.trainRouter() ? " and the routers" : "") + " in all "
                        + model.num_experts + " experts" + (config.sharedExpert() ? " and the shared expert" : "")
                        + " of every MoE layer)");
            }
        }
        return state;
    }

    /**
     * Checks that a trained sigmoid router's {@code e_score_correction_bias} of layer {@code l}, when present, is [E];
     * the model keeps its own (the bias is frozen, see {@link AdapterKeys#peftRouterBias}). Returns the key.
     */
    static String checkRouterBias(SafeTensorsFile file, Path source, ModelConfig model, int l) {
        String key = AdapterKeys.peftRouterBias(l);
        if (file.has(key) && !Arrays.equals(file.info(key).shape(), new long[] {model.num_experts})) {
            throw new AdapterFormatException(source + ": " + key + " has shape "
                    + Arrays.toString(file.info(key).shape()) + " but the model implies [" + model.num_experts + "]");
        }
        return key;
    }

    private String shapeError(String name, long[] shape, Slot slot) {
        int rankAxis = slot.isA() ? 0 : 1;
        if (slot.expert() >= 0 && shape.length == 2 && shape[rankAxis] != config.r()) {
            return "wrong rank: " + name + " has shape " + Arrays.toString(shape) + ", rank " + shape[rankAxis]
                    + ", but adapter_config.json says r=" + config.r();
        }
        return name + " has shape " + Arrays.toString(shape) + " but the " + AdapterConfig.typeName(model)
                + " model implies " + Arrays.toString(slot.shape()) + " (an adapter for a different model?)";
    }

    private String diagnose(String name) {
        if (!name.startsWith(AdapterKeys.PEFT_PREFIX)) {
            return "unknown key " + name + " (PEFT LoRA keys start with " + AdapterKeys.PEFT_PREFIX + ")";
        }
        Matcher m = EXPERT_KEY.matcher(name);
        if (!m.matches()) {
            return "unknown module in key " + name + " (expected LoRA matrices of the expert projections "
                    + projectionNames() + (config.trainRouter() ? " or the routers" : "") + " of this "
                    + AdapterConfig.typeName(model) + " model)";
        }
        int layer = Integer.parseInt(m.group(1));
        String block = m.group(2);
        int expert = Integer.parseInt(m.group(3));
        String projection = m.group(4);
        String ownBlock = model.modelType == ModelConfig.ModelType.MIXTRAL ? "block_sparse_moe" : "mlp";
        Projection p = projection(projection);
        if (!block.equals(ownBlock) || p == null && isOtherLayoutName(projection)) {
            return "adapter for a different architecture: " + name + " does not fit this "
                    + AdapterConfig.typeName(model) + " model, whose experts are " + ownBlock + ".experts.<e>.{"
                    + layout.projectionName(Projection.GATE) + "," + layout.projectionName(Projection.UP) + ","
                    + layout.projectionName(Projection.DOWN) + "}";
        }
        if (p == null) {
            return "unknown module " + projection + " in key " + name + " (expert projections of this model: "
                    + layout.projectionName(Projection.GATE) + ", " + layout.projectionName(Projection.UP) + ", "
                    + layout.projectionName(Projection.DOWN) + ")";
        }
        if (layer >= model.num_hidden_layers || !model.isMoeLayer(layer)) {
            return name + ": layer " + layer + " has no MoE block in this model (" + model.num_hidden_layers + " layers)";
        }
        if (expert >= model.num_experts) {
            return name + ": expert " + expert + " does not exist (the model has " + model.num_experts + " experts)";
        }
        return name + " adapts " + projection + ", which adapter_config.json's target_modules does not select ("
                + projectionNames() + ")";
    }

    private Projection projection(String name) {
        for (Projection p : Projection.values()) {
            if (layout.projectionName(p).equals(name)) {
                return p;
            }
        }
        return null;
    }

    private boolean isOtherLayoutName(String name) {
        for (ModelConfig.ModelType type : ModelConfig.ModelType.values()) {
            CheckpointLayout other = new CheckpointLayout(type);
            for (Projection p : Projection.values()) {
                if (other.projectionName(p).equals(name)) {
                    return true;
                }
            }
        }
        return false;
    }

    private String projectionNames() {
        return String.join(", ", config.targets().stream().map(layout::projectionName).toList());
    }
}
