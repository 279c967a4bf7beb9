package org.sparkmoe.train;

import org.sparkmoe.adapter.AdapterKeys;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;

/**
 * Names of the trainable tensors (the shared contract): {@code <moe prefix>.experts.<proj>.lora_A} [E, R, in],
 * {@code <moe prefix>.experts.<proj>.lora_B} [E, out, R], the shared expert's
 * {@code model.layers.<l>.mlp.shared_expert(s).<proj>.lora_A} [1, R, in] / {@code lora_B} [1, out, R] and the
 * router's Hugging Face key
 * {@code <moe prefix>.gate.weight} [E, D], where the prefix is {@code model.layers.<l>.block_sparse_moe} (Mixtral)
 * or {@code model.layers.<l>.mlp} (Qwen2-MoE) and proj the layout's projection name (w1/w3/w2 or
 * gate_proj/up_proj/down_proj). gpt-oss's router is {@code model.layers.<l>.mlp.router.weight} [E, D] with its bias
 * {@code model.layers.<l>.mlp.router.bias} [E], trained with it.
 */
public final class TrainableKeys {
    private final CheckpointLayout layout;
    private final boolean routerBias;

    public TrainableKeys(ModelConfig.ModelType modelType) {
        this.layout = new CheckpointLayout(modelType);
        this.routerBias = modelType == ModelConfig.ModelType.GPT_OSS;
    }

    public String loraA(int layer, Projection p) {
        return experts(layer, p) + ".lora_A";
    }

    public String loraB(int layer, Projection p) {
        return experts(layer, p) + ".lora_B";
    }

    /** The shared expert's A [1, R, in]: its checkpoint key with ".weight" replaced. */
    public String sharedLoraA(int layer, Projection p) {
        return AdapterKeys.sharedLoraA(layout, layer, p);
    }

    /** The shared expert's B [1, out, R]. */
    public String sharedLoraB(int layer, Projection p) {
        return AdapterKeys.sharedLoraB(layout, layer, p);
    }

    public String router(int layer) {
        return layout.routerGate(layer);
    }

    /** Whether the router has a bias (gpt-oss), trained with its weight. */
    public boolean hasRouterBias() {
        return routerBias;
    }

    /** The router bias key [E] (gpt-oss only). */
    public String routerBias(int layer) {
        return layout.routerBias(layer);
    }

    /** {@code <moe prefix>.experts.<proj>}. */
    private String experts(int layer, Projection p) {
        return layout.moePrefix(layer) + "experts." + layout.projectionName(p);
    }
}
