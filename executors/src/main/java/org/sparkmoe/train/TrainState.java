package org.sparkmoe.train;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Function;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.experts.LoraExperts;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankExperts;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.MoeTransformer;

/**
 * Everything a training run carries between steps: the trainable tensors (see {@link TrainableKeys}; order: by
 * layer, then projection gate/up/down (w1, w3, w2), A before B, then the shared expert's in the same order, the
 * router last within a layer), AdamW's first
 * and second moments under the same keys, and the number of optimiser steps taken. Plain mutable fields and a
 * no-argument constructor, so Kryo's field serializer handles it; {@link TrainStep} updates it in place.
 */
public final class TrainState {
    private LinkedHashMap<String, INDArray> params;
    private LinkedHashMap<String, INDArray> m;
    private LinkedHashMap<String, INDArray> v;
    private long step;

    /** For serializers only. */
    public TrainState() {
    }

    /** Takes the maps as they are (no copies); they must hold the same keys, in the same order, with equal shapes. */
    public TrainState(LinkedHashMap<String, INDArray> params, LinkedHashMap<String, INDArray> m,
                      LinkedHashMap<String, INDArray> v, long step) {
        checkLike("m", params, m);
        checkLike("v", params, v);
        if (step < 0) {
            throw new IllegalArgumentException("step must be ≥ 0, got " + step);
        }
        this.params = params;
        this.m = m;
        this.v = v;
        this.step = step;
    }

    /** {@link #init(MoeTransformer, LoraSpec, long, DataType)} in FLOAT, the type training runs in. */
    public static TrainState init(MoeTransformer model, LoraSpec spec, long rootSeed) {
        return init(model, spec, rootSeed, DataType.FLOAT);
    }

    /**
     * The state before the first step, PEFT-initialised: for every MoE layer and target, A Kaiming-uniform and
     * B zero ({@link LoraExperts#init}) with the seed {@code Seeds.derive(rootSeed, <lora_A key>)}, for the routed
     * experts and (when the spec asks) the shared expert as one expert; the routers (when
     * trained) start as the model's own; moments zero; step 0. A low-rank-expert model ({@code surgery lowrank})
     * starts instead from its own stacked LoRA experts, which the state's keys name exactly (see
     * {@link #checkLowRank}).
     *
     * @param dataType FLOAT for training, DOUBLE for gradient checks (must match the model's)
     */
    public static TrainState init(MoeTransformer model, LoraSpec spec, long rootSeed, DataType dataType) {
        if (model.dataType() != dataType) {
            throw new IllegalArgumentException("state type " + dataType + " differs from the model's "
                    + model.dataType());
        }
        TrainableKeys keys = new TrainableKeys(model.config().modelType);
        Map<String, INDArray> own = new HashMap<>();
        for (int l = 0; l < model.layers().size(); l++) {
            DecoderLayer layer = model.layers().get(l);
            if (!layer.isMoe()) {
                continue;
            }
            own.put(keys.router(l), layer.moe().router().weight());                               // [E, D]
            if (keys.hasRouterBias()) {
                own.put(keys.routerBias(l), layer.moe().router().bias());                         // [E]
            }
            if (layer.moe().experts() instanceof LowRankExperts lowRank) {
                LowRankAdapters a = lowRank.weights().adapters();
                INDArray[] factors = {a.a1, a.b1, a.a3, a.b3, a.a2, a.b2};
                int f = 0;
                for (Projection p : Projection.values()) {
                    own.put(keys.loraA(l, p), factors[f++]);                                      // [E, R, in]
                    own.put(keys.loraB(l, p), factors[f++]);                                      // [E, out, R]
                }
            }
        }
        return init(model.config(), own::get, spec, rootSeed, dataType);
    }

    /**
     * As {@link #init(MoeTransformer, LoraSpec, long, DataType)} in FLOAT, reading from {@code checkpoint} only the
     * tensors the state starts from (the routers when trained, a low-rank model's experts): what a driver needs,
     * without loading the model.
     */
    public static TrainState init(ModelConfig c, TensorSource checkpoint, LoraSpec spec, long rootSeed) {
        return init(c, checkpoint::readFloat, spec, rootSeed, DataType.FLOAT);
    }

    /** @param own the model's tensor of a state key (a router, or a low-rank model's stacked expert factors) */
    private static TrainState init(ModelConfig c, Function<String, INDArray> own, LoraSpec spec, long rootSeed,
                                   DataType dataType) {
        if (spec.mumoe() != null) {
            return fresh(mumoe(c, spec.mumoe(), rootSeed, dataType));
        }
        boolean lowRank = c.hasLowRankExperts();
        if (lowRank) {
            checkLowRank(c, spec);
        }
        checkShared(c, spec);
        TrainableKeys keys = new TrainableKeys(c.modelType);
        LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
        for (int l = 0; l < c.num_hidden_layers; l++) {
            if (!c.isMoeLayer(l)) {
                continue;
            }
            for (Projection p : spec.targets()) {
                if (lowRank) {
                    params.put(keys.loraA(l, p), own.apply(keys.loraA(l, p)).castTo(dataType).dup('c')); // [E, R, in]
                    params.put(keys.loraB(l, p), own.apply(keys.loraB(l, p)).castTo(dataType).dup('c')); // [E, out, R]
                } else {
                    LoraExperts lora = LoraExperts.init(c.num_experts, in(c, p), out(c, p), spec.rank(), spec.alpha(),
                            Seeds.derive(rootSeed, keys.loraA(l, p)), dataType);
                    params.put(keys.loraA(l, p), lora.a());                                   // [E, R, in]
                    params.put(keys.loraB(l, p), lora.b());                                   // [E, out, R]
                }
            }
            if (spec.sharedExpert()) {
                for (Projection p : spec.targets()) {
                    LoraExperts lora = LoraExperts.init(1, sharedIn(c, p), sharedOut(c, p), spec.rank(), spec.alpha(),
                            Seeds.derive(rootSeed, keys.sharedLoraA(l, p)), dataType);
                    params.put(keys.sharedLoraA(l, p), lora.a());                             // [1, R, in]
                    params.put(keys.sharedLoraB(l, p), lora.b());                             // [1, out, R]
                }
            }
            if (spec.trainRouter()) {
                params.put(keys.router(l), own.apply(keys.router(l)).castTo(dataType).dup('c'));   // [E, D]
                if (keys.hasRouterBias()) {
                    params.put(keys.routerBias(l), own.apply(keys.routerBias(l)).castTo(dataType).dup('c')); // [E]
                }
            }
        }
        return fresh(params);
    }

    /**
     * A μMoE adapter's tensors before the first step, by site in {@link MumoeConfig#placements} order: each site's
     * layer drawn from {@code Seeds.derive(rootSeed, <site prefix>)} with its output factor or core zero
     * ({@link org.sparkmoe.mumoe.MumoeForm#init}), so the model starts as the base.
     */
    private static LinkedHashMap<String, INDArray> mumoe(ModelConfig c, MumoeConfig mumoe, long rootSeed,
                                                         DataType dataType) {
        checkMumoe(c);
        LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
        for (MumoeConfig.Placement p : mumoe.placements(c)) {
            mumoe.form().init(new Random(Seeds.derive(rootSeed, p.prefix())), dataType, p.in(), p.out(),
                    mumoe.expertDims(), mumoe.ranks()).parameters()
                    .forEach((name, a) -> params.put(p.prefix() + name, a.dup('c')));
        }
        return params;
    }

    /**
     * A μMoE adapter applies to a model of full experts or of CP- or TR-form experts (frozen: the backward runs
     * through them to their input only); a shared-base low-rank model trains its own LoRA experts.
     */
    public static void checkMumoe(ModelConfig c) {
        if (c.hasLowRankExperts() && !cpOrTr(c)) {
            throw new IllegalArgumentException("--adapter mumoe-*: a low-rank model (surgery lowrank, rank "
                    + c.low_rank_experts_rank + ") trains its own LoRA experts; use --adapter lora");
        }
    }

    /**
     * {@code tensors.get(key)}, replaced in the map by a 'c'-order copy first when it is not contiguous: a tensor that
     * {@link NativeElements} reads and writes in place (AdamW's state, clipped gradients).
     */
    static INDArray contiguous(Map<String, INDArray> tensors, String key) {
        INDArray a = tensors.get(key);
        if (!NativeElements.contiguous(a)) {
            a = a.dup('c');
            tensors.put(key, a);
        }
        return a;
    }

    /** A state at step 0 holding {@code params}, with zero moments. */
    public static TrainState fresh(LinkedHashMap<String, INDArray> params) {
        return new TrainState(params, zerosLike(params), zerosLike(params), 0);
    }

    /**
     * A low-rank-expert model trains its own LoRA experts: the spec must target all three projections at the model's
     * rank with scale α/R = 1 (the checkpoint's B carries the magnitudes).
     */
    public static void checkLowRank(ModelConfig c, LoraSpec spec) {
        requireSvdForm(c);
        int r = c.low_rank_experts_rank;
        if (spec.targets().size() != Projection.values().length || spec.rank() != r || spec.scale() != 1.0) {
            throw new IllegalArgumentException("a low-rank model (surgery lowrank, rank " + r + ") trains its own LoRA "
                    + "experts: targets w1, w3, w2, rank " + r + ", alpha " + r + " (scale 1); got targets "
                    + spec.targets() + ", rank " + spec.rank() + ", alpha " + spec.alpha());
        }
    }

    /**
     * Training a low-rank model's own experts is built for the shared-base SVD form only: a model of CP- or TR-form
     * experts trains a μMoE adapter beside its frozen experts, nothing else.
     */
    public static void requireSvdForm(ModelConfig c) {
        if (cpOrTr(c)) {
            throw new IllegalArgumentException(CP_TR_TRAINS);
        }
    }

    /** What {@code train} does with a model of CP- or TR-form experts, and what it does not. */
    public static final String CP_TR_TRAINS = "a model of CP- or TR-form experts (surgery lowrank --form cp|tr) trains "
            + "only a μMoE adapter beside its frozen experts (--adapter mumoe-cp|mumoe-tr): LoRA on its experts, "
            + "--train-router and training its CP factors or TR cores are not built";

    /**
     * A model of CP- or TR-form experts keeps them and its routers frozen: only a μMoE adapter trains
     * ({@link #CP_TR_TRAINS}).
     */
    public static void checkCpOrTr(ModelConfig c, LoraSpec spec) {
        if (cpOrTr(c) && spec.mumoe() == null) {
            throw new IllegalArgumentException(CP_TR_TRAINS);
        }
    }

    /** Whether the model's experts are in CP or TR form ({@code surgery lowrank --form cp|tr}). */
    private static boolean cpOrTr(ModelConfig c) {
        return c.hasCpExperts() || c.hasTrExperts();
    }

    /**
     * LoRA on the shared expert needs a model with one (qwen2_moe's shared_expert, glm4_moe's shared_experts) of full
     * experts; a low-rank model ({@code surgery lowrank}) is written as a checkpoint, which has no place for it.
     */
    public static void checkShared(ModelConfig c, LoraSpec spec) {
        if (!spec.sharedExpert()) {
            return;
        }
        String type = c.modelType.name().toLowerCase(java.util.Locale.ROOT);
        if (!c.hasSharedExpert()) {
            throw new IllegalArgumentException("LoRA on the shared expert: model_type " + type + " has no shared expert");
        }
        if (c.hasLowRankExperts()) {
            throw new IllegalArgumentException("LoRA on the shared expert: a low-rank " + type + " model (surgery "
                    + "lowrank) trains only its LoRA experts; its shared expert stays frozen");
        }
    }

    /**
     * The keys a state for {@code spec} holds on {@code model}, in contract order: for every MoE layer, the targets'
     * lora_A then lora_B in the order gate, up, down (w1, w3, w2), the shared expert's likewise when adapted, then
     * the router when trained (and its bias, gpt-oss).
     */
    public static List<String> keys(MoeTransformer model, LoraSpec spec) {
        if (spec.mumoe() != null) {
            return List.copyOf(spec.mumoe().expectedState(model.config()).keySet());
        }
        TrainableKeys keys = new TrainableKeys(model.config().modelType);
        List<String> out = new ArrayList<>();
        for (int l = 0; l < model.layers().size(); l++) {
            if (!model.layers().get(l).isMoe()) {
                continue;
            }
            for (Projection p : spec.targets()) {
                out.add(keys.loraA(l, p));
                out.add(keys.loraB(l, p));
            }
            if (spec.sharedExpert()) {
                for (Projection p : spec.targets()) {
                    out.add(keys.sharedLoraA(l, p));
                    out.add(keys.sharedLoraB(l, p));
                }
            }
            if (spec.trainRouter()) {
                out.add(keys.router(l));
                if (keys.hasRouterBias()) {
                    out.add(keys.routerBias(l));
                }
            }
        }
        return out;
    }

    private static int in(ModelConfig c, Projection p) {
        return p == Projection.DOWN ? c.expert_intermediate_size : c.hidden_size;
    }

    private static int out(ModelConfig c, Projection p) {
        return p == Projection.DOWN ? c.hidden_size : c.expert_intermediate_size;
    }

    private static int sharedIn(ModelConfig c, Projection p) {
        return p == Projection.DOWN ? c.shared_expert_intermediate_size : c.hidden_size;
    }

    private static int sharedOut(ModelConfig c, Projection p) {
        return p == Projection.DOWN ? c.hidden_size : c.shared_expert_intermediate_size;
    }

    /** @return the trainable tensors by key, in contract order (live; {@link TrainStep} replaces values) */
    public LinkedHashMap<String, INDArray> params() {
        return params;
    }

    /** @return AdamW's first moments, same keys */
    public LinkedHashMap<String, INDArray> m() {
        return m;
    }

    /** @return AdamW's second moments, same keys */
    public LinkedHashMap<String, INDArray> v() {
        return v;
    }

    /** @return optimiser steps taken */
    public long step() {
        return step;
    }

    void advance(long newStep) {
        step = newStep;
    }

    /**
     * The name of the first tensor (parameters, then the moments, as "m NAME" / "v NAME") holding a NaN or an
     * infinity, or null when every value is finite.
     */
    public String firstNonFinite() {
        for (String prefix : List.of("", "m ", "v ")) {
            Map<String, INDArray> map = prefix.isEmpty() ? params : prefix.equals("m ") ? m : v;
            for (Map.Entry<String, INDArray> e : map.entrySet()) {
                if (!Double.isFinite(e.getValue().sumNumber().doubleValue())) { // NaN and ±Inf propagate
                    return prefix + e.getKey();
                }
            }
        }
        return null;
    }

    /** A deep copy. */
    public TrainState copy() {
        return new TrainState(dupAll(params), dupAll(m), dupAll(v), step);
    }

    /**
     * Frees every tensor of this state now (a task's copy once its averaging chunks are taken), instead of when the
     * garbage collector finds them: a state copy per task and round would otherwise pile up off the heap. The state
     * must not be used afterwards.
     */
    public void release() {
        for (Map<String, INDArray> map : List.of(params, m, v)) {
            for (INDArray a : map.values()) {
                if (a.closeable()) {
                    a.close();
                }
            }
        }
    }

    /** Bytes of the tensors (parameters and both moments): what one copy of the state moves. */
    public long bytes() {
        long total = 0;
        for (Map<String, INDArray> map : List.of(params, m, v)) {
            for (INDArray a : map.values()) {
                total += a.length() * a.dataType().width();
            }
        }
        return total;
    }

    static LinkedHashMap<String, INDArray> zerosLike(Map<String, INDArray> like) {
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        like.forEach((k, a) -> out.put(k, Nd4j.zeros(a.dataType(), a.shape())));
        return out;
    }

    private static LinkedHashMap<String, INDArray> dupAll(Map<String, INDArray> map) {
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        map.forEach((k, a) -> out.put(k, a.dup('c')));
        return out;
    }

    /** Throws unless {@code other} has the keys of {@code params} in the same order with the same shapes. */
    static void checkLike(String name, Map<String, INDArray> params, Map<String, INDArray> other) {
        if (params == null || other == null) {
            throw new IllegalArgumentException("trainable tensors and " + name + " must not be null");
        }
        if (!Arrays.equals(params.keySet().toArray(), other.keySet().toArray())) {
            throw new IllegalArgumentException(name + " keys " + other.keySet() + " differ from the trainable keys "
                    + params.keySet());
        }
        for (Map.Entry<String, INDArray> e : params.entrySet()) {
            INDArray o = other.get(e.getKey());
            if (!Arrays.equals(e.getValue().shape(), o.shape()) || e.getValue().dataType() != o.dataType()) {
                throw new IllegalArgumentException(name + " " + e.getKey() + " is " + Arrays.toString(o.shape())
                        + " " + o.dataType() + ", expected " + Arrays.toString(e.getValue().shape()) + " "
                        + e.getValue().dataType());
            }
        }
    }
}
