package org.sparkmoe.adapter;

import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LoraExperts;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.OwnedArrays;
import org.sparkmoe.moe.MoeBlock;

/**
 * A model with a PEFT adapter applied as PEFT runs it unmerged: every targeted expert projection computes
 * {@code x·Wᵀ + (lora_alpha/r)·(x·Aᵀ)·Bᵀ} through the LoRA grouped GEMMs (the shared expert's too, when adapted), and
 * a trained router replaces the base's.
 * The base model's weights are shared, not copied: the adapter adds only its own tensors, which the adapted model owns
 * (a merged copy would cost a whole model per adapter). Results agree with the merged checkpoint up to float32 rounding of the different order.
 */
public final class AdaptedModel {
    private AdaptedModel() {
    }

    /**
     * {@code base} with the adapter folder {@code dir} applied: a μMoE adapter when its adapter_config.json says so
     * (adapter_type MUMOE), else a PEFT LoRA adapter read with {@code peftVersion} (see
     * {@link PeftAdapter#read(Path, Configuration, org.sparkmoe.io.ModelConfig, String)}).
     */
    public static MoeTransformer read(MoeTransformer base, Path dir, Configuration conf, String peftVersion) {
        return read(base, dir, conf, peftVersion, MutedExperts.NONE);
    }

    /**
     * As {@link #read(MoeTransformer, Path, Configuration, String)}, with {@code muted}'s experts of a μMoE adapter
     * silenced ({@link MumoeAdapter#muted}); a PEFT adapter takes none.
     */
    public static MoeTransformer read(MoeTransformer base, Path dir, Configuration conf, String peftVersion,
                                      MutedExperts muted) {
        if (MumoeAdapter.isMumoe(dir, conf)) {
            return MumoeAdapter.read(dir, conf, base.config()).muted(muted, base.config()).apply(base);
        }
        requireNoneMuted(dir, muted);
        return of(base, PeftAdapter.read(dir, conf, base.config(), peftVersion));
    }

    private static void requireNoneMuted(Path dir, MutedExperts muted) {
        if (!muted.isEmpty()) {
            throw new IllegalArgumentException("--mute-experts silences a μMoE adapter's experts; " + dir
                    + " is a PEFT LoRA adapter (its experts are the model's, routed top-k: see surgery prune)");
        }
    }

    /**
     * Reads the adapter folder {@code dir} for {@code model} as {@link #read} would, and throws what it would throw
     * (a command checks its --adapter before any task starts).
     */
    public static void check(Path dir, Configuration conf, org.sparkmoe.io.ModelConfig model, String peftVersion) {
        check(dir, conf, model, peftVersion, MutedExperts.NONE);
    }

    /** As {@link #check(Path, Configuration, org.sparkmoe.io.ModelConfig, String)}, with {@code muted} checked too. */
    public static void check(Path dir, Configuration conf, org.sparkmoe.io.ModelConfig model, String peftVersion,
                             MutedExperts muted) {
        if (MumoeAdapter.isMumoe(dir, conf)) {
            MumoeAdapter.read(dir, conf, model).muted(muted, model);
        } else {
            requireNoneMuted(dir, muted);
            PeftAdapter.read(dir, conf, model, peftVersion);
        }
    }

    /** {@code base} with {@code adapter} applied; the adapter must have been read for {@code base}'s config. */
    public static MoeTransformer of(MoeTransformer base, PeftAdapter adapter) {
        if (base.config().hasLowRankExperts()) {
            throw new IllegalArgumentException("a PEFT adapter applies to full experts; this model holds a shared base "
                    + "and rank-" + base.config().low_rank_experts_rank + " experts (surgery lowrank)");
        }
        CheckpointLayout layout = new CheckpointLayout(base.config().modelType);
        AdapterConfig config = adapter.config();
        List<MoeBlock> blocks = new ArrayList<>();
        List<DecoderLayer> layers = base.layers();
        for (int l = 0; l < layers.size(); l++) {
            MoeBlock moe = layers.get(l).moe();
            if (moe == null) {
                continue;
            }
            FullExperts experts = (FullExperts) moe.experts();
            INDArray router = config.trainRouter() ? adapter.state().get(layout.routerGate(l)) : null;
            INDArray routerBias = config.trainRouter() && base.config().clamped_experts
                    ? adapter.state().get(layout.routerBias(l)) : null;                       // gpt-oss
            MoeBlock block = moe.with(router, routerBias, moe.options(), experts.withLora(
                    lora(adapter, layout, l, Projection.GATE), lora(adapter, layout, l, Projection.UP),
                    lora(adapter, layout, l, Projection.DOWN)));
            if (config.sharedExpert()) {
                block = block.withShared(block.shared().withLora(sharedLora(adapter, layout, l, Projection.GATE),
                        sharedLora(adapter, layout, l, Projection.UP), sharedLora(adapter, layout, l, Projection.DOWN)));
            }
            blocks.add(block);
        }
        OwnedArrays owned = new OwnedArrays();
        adapter.state().values().forEach(owned::add);
        return base.withMoeBlocks(blocks, owned);
    }

    /** The stacked LoRA of one projection of layer l (A [E, R, in], B [E, out, R]), or null when not targeted. */
    private static LoraExperts lora(PeftAdapter adapter, CheckpointLayout layout, int l, Projection p) {
        if (!adapter.config().targets().contains(p)) {
            return null;
        }
        return new LoraExperts(adapter.state().get(AdapterKeys.loraA(layout, l, p)),
                adapter.state().get(AdapterKeys.loraB(layout, l, p)), adapter.config().loraAlpha());
    }

    /** The shared expert's LoRA of one projection of layer l (A [1, R, in], B [1, out, R]), or null. */
    private static LoraExperts sharedLora(PeftAdapter adapter, CheckpointLayout layout, int l, Projection p) {
        if (!adapter.config().targets().contains(p)) {
            return null;
        }
        return new LoraExperts(adapter.state().get(AdapterKeys.sharedLoraA(layout, l, p)),
                adapter.state().get(AdapterKeys.sharedLoraB(layout, l, p)), adapter.config().loraAlpha());
    }
}
