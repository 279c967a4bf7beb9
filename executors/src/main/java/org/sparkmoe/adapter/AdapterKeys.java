package org.sparkmoe.adapter;

import org.sparkmoe.io.ModelConfig;

import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;

/**
 * Names of LoRA tensors: the stacked trainable-state keys ({@code <moe prefix>.experts.<proj>.lora_A} [E, R, in])
 * and the per-expert keys PEFT saves ({@code base_model.model.<moe prefix>.experts.<e>.<proj>.lora_A.weight}
 * [R, in]), the shared expert's ({@code <layer>.mlp.shared_expert(s).<proj>.lora_A}, one expert), plus PEFT's key for
 * a router kept under modules_to_save.
 */
public final class AdapterKeys {
    /** The prefix PEFT's LoraModel puts before every module path of the wrapped model. */
    public static final String PEFT_PREFIX = "base_model.model.";

    private AdapterKeys() {
    }

    /** Stacked A of one projection of layer {@code layer}'s experts: [E, R, in]. */
    public static String loraA(CheckpointLayout layout, int layer, Projection p) {
        return stacked(layout, layer, p) + ".lora_A";
    }

    /** Stacked B of one projection of layer {@code layer}'s experts: [E, out, R]. */
    public static String loraB(CheckpointLayout layout, int layer, Projection p) {
        return stacked(layout, layer, p) + ".lora_B";
    }

    private static String stacked(CheckpointLayout layout, int layer, Projection p) {
        return layout.moePrefix(layer) + "experts." + layout.projectionName(p);
    }

    /** Stacked A of the shared expert's projection of layer {@code layer}: [1, R, in]. */
    public static String sharedLoraA(CheckpointLayout layout, int layer, Projection p) {
        return layout.sharedExpertModule(layer, p) + ".lora_A";
    }

    /** Stacked B of the shared expert's projection of layer {@code layer}: [1, out, R]. */
    public static String sharedLoraB(CheckpointLayout layout, int layer, Projection p) {
        return layout.sharedExpertModule(layer, p) + ".lora_B";
    }

    /** PEFT's key of the shared expert's A, e.g. {@code base_model.model.model.layers.1.mlp.shared_experts.gate_proj.lora_A.weight}: [R, in]. */
    public static String peftSharedA(CheckpointLayout layout, int layer, Projection p) {
        return PEFT_PREFIX + layout.sharedExpertModule(layer, p) + ".lora_A.weight";
    }

    /** PEFT's key of the shared expert's B: [out, R]. */
    public static String peftSharedB(CheckpointLayout layout, int layer, Projection p) {
        return PEFT_PREFIX + layout.sharedExpertModule(layer, p) + ".lora_B.weight";
    }

    /** PEFT's key of one expert's A: [R, in]. */
    public static String peftA(CheckpointLayout layout, int layer, int expert, Projection p) {
        return PEFT_PREFIX + layout.expertModule(layer, expert, p) + ".lora_A.weight";
    }

    /** PEFT's key of one expert's B: [out, R]. */
    public static String peftB(CheckpointLayout layout, int layer, int expert, Projection p) {
        return PEFT_PREFIX + layout.expertModule(layer, expert, p) + ".lora_B.weight";
    }

    /**
     * The router's module path relative to a layer, as adapter_config.json's modules_to_save names it: the module
     * of transformers ≥ 5, {@code mlp.gate} for both layouts. (Transformers 4 named Mixtral's router
     * {@code block_sparse_moe.gate}, the checkpoint's key; PEFT 0.21 on transformers 5 silently ignores that name,
     * leaving the trained router out, so it is only read, never written.)
     */
    public static final String ROUTER_MODULE = "mlp.gate";

    /**
     * PEFT's key of a trained router: get_peft_model_state_dict saves a modules_to_save copy as
     * {@code <module path>.weight} under the PEFT prefix (the "modules_to_save.default" part is dropped).
     */
    /** The router's module as modules_to_save names it: {@link #ROUTER_MODULE}, or gpt-oss's {@code mlp.router}. */
    public static String routerModule(ModelConfig.ModelType type) {
        return type == ModelConfig.ModelType.GPT_OSS ? "mlp.router" : ROUTER_MODULE;
    }

    /** gpt-oss: the saved router weight and bias, {@code base_model.model.model.layers.L.mlp.router.<weight|bias>}. */
    public static String peftGptOssRouter(int layer, String suffix) {
        return PEFT_PREFIX + "model.layers." + layer + ".mlp.router." + suffix;
    }

    public static String peftRouter(int layer) {
        return PEFT_PREFIX + "model.layers." + layer + "." + ROUTER_MODULE + ".weight";
    }

    /**
     * PEFT's key of a trained sigmoid router's {@code e_score_correction_bias} [E] (glm4_moe): a persistent buffer of
     * the router module, so get_peft_model_state_dict saves it with the modules_to_save copy and PEFT's loader
     * requires it. SparkMoE keeps the bias frozen: it writes the checkpoint's and, reading, checks only its shape.
     */
    public static String peftRouterBias(int layer) {
        return PEFT_PREFIX + "model.layers." + layer + "." + ROUTER_MODULE + ".e_score_correction_bias";
    }

    /** The router key under the module path of transformers 4 (the checkpoint key), accepted when reading. */
    public static String legacyPeftRouter(CheckpointLayout layout, int layer) {
        return PEFT_PREFIX + layout.routerGate(layer);
    }
}
