package org.sparkmoe.adapter;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.TensorSource;

import java.util.HashMap;
import java.util.Map;

/**
 * A checkpoint seen with an adapter merged in, as PEFT's merge_and_unload does: every targeted expert weight (and the
 * shared expert's, when adapted) reads as W_e + (lora_alpha / r) · B_e · A_e ([out, in] += [out, R] · [R, in],
 * float32), and a trained router (with its bias, gpt-oss)
 * reads as the adapter's. Every other tensor, and every shape, is the base checkpoint's.
 */
public final class MergedTensors implements TensorSource {
    /** One targeted expert weight: slice {@code expert} of the stacked A [E, R, in] and B [E, out, R]. */
    private record Delta(INDArray a, INDArray b, int expert) {
    }

    private final TensorSource base;
    private final PeftAdapter adapter;
    private final Map<String, Delta> deltas = new HashMap<>();
    private final Map<String, INDArray> routers = new HashMap<>();

    public MergedTensors(TensorSource base, PeftAdapter adapter) {
        this.base = base;
        this.adapter = adapter;
        ModelConfig model = adapter.model();
        if (model.hasLowRankExperts()) {
            throw new IllegalArgumentException("a PEFT adapter applies to full experts; this model holds a shared base and "
                    + "rank-" + model.low_rank_experts_rank + " experts (surgery lowrank)");
        }
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (!model.isMoeLayer(l)) {
                continue;
            }
            for (Projection p : adapter.config().targets()) {
                INDArray a = adapter.state().get(AdapterKeys.loraA(layout, l, p));
                INDArray b = adapter.state().get(AdapterKeys.loraB(layout, l, p));
                for (int e = 0; e < model.num_experts; e++) {
                    deltas.put(layout.expert(l, e, p), new Delta(a, b, e));
                }
                if (adapter.config().sharedExpert()) {
                    deltas.put(layout.sharedExpert(l, p), new Delta(adapter.state().get(AdapterKeys.sharedLoraA(layout, l, p)),
                            adapter.state().get(AdapterKeys.sharedLoraB(layout, l, p)), 0));             // [1, R, in], [1, out, R]
                }
            }
            if (adapter.config().trainRouter()) {
                routers.put(layout.routerGate(l), adapter.state().get(layout.routerGate(l)));
                if (model.clamped_experts) {
                    routers.put(layout.routerBias(l), adapter.state().get(layout.routerBias(l)));   // gpt-oss
                }
            }
        }
    }

    @Override
    public boolean has(String name) {
        return base.has(name);
    }

    @Override
    public long[] shape(String name) {
        return base.shape(name);
    }

    @Override
    public DType dtype(String name) {
        return routers.containsKey(name) || deltas.containsKey(name) ? DType.F32 : base.dtype(name);
    }

    @Override
    public INDArray readFloat(String name) {
        INDArray router = routers.get(name);
        if (router != null) {
            return router.dup('c');
        }
        INDArray weight = base.readFloat(name); // [out, in]
        Delta delta = deltas.get(name);
        if (delta != null) {
            INDArray b = delta.b().slice(delta.expert()); // [out, R]
            INDArray a = delta.a().slice(delta.expert()); // [R, in]
            Nd4j.gemm(b, a, weight, false, false, adapter.config().scale(), 1.0);
        }
        return weight;
    }

    /** The base's stored tensor, except for what the adapter changes (merged into a float32 copy). */
    @Override
    public INDArray stored(String name) {
        return routers.containsKey(name) || deltas.containsKey(name) ? readFloat(name) : base.stored(name);
    }

    @Override
    public String describe() {
        return base.describe() + " with a LoRA adapter merged";
    }
}
