package org.sparkmoe.io;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout.Projection;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A checkpoint whose MoE layers store their experts fused, as transformers 5 keeps them in memory and Qwen3.5-style
 * releases store them, seen under the classic per-expert keys every other part of SparkMoE reads.
 *
 * <p>The fused layout per MoE layer L (transformers 5.17 {@code conversion_mapping.py}: {@code MergeModulelist(dim=0)}
 * then {@code Concatenate(dim=1)} of the per-expert gate and up weights; the same mapping for mixtral, qwen2_moe, and
 * for qwen3_moe and olmoe, which transformers maps onto qwen2_moe's):
 * <pre>
 *   model.layers.L.mlp.experts.gate_up_proj  [E, 2I, D]   expert e: rows 0..I-1 gate_proj (w1), rows I..2I-1 up_proj (w3)
 *   model.layers.L.mlp.experts.down_proj     [E, D, I]    expert e = down_proj (w2)
 * </pre>
 * Mixtral's fused checkpoints also rename {@code block_sparse_moe.} to {@code mlp.}, so its router is
 * {@code model.layers.L.mlp.gate.weight}. A layer is read as fused when its expert 0 gate weight is absent and its
 * {@code gate_up_proj} is present; per-expert and fused layers may mix. The last fused tensor read is kept, so the E
 * gate and E up slices of one layer read the file once.
 */
public final class FusedExperts implements TensorSource {
    /** Where a per-expert name lives: rows [from, to) of expert {@code expert} of the fused tensor {@code fused}. */
    private record Slice(String fused, int expert, long from, long to) {
    }

    private final TensorSource base;
    private final Map<String, Slice> slices = new HashMap<>();
    private final Map<String, String> renamed = new HashMap<>();  // per-expert layout name → fused layout name
    private String cachedName;       // guarded by this
    private INDArray cachedTensor;   // guarded by this

    private FusedExperts(TensorSource base) {
        this.base = base;
    }

    /**
     * The view every reader of a checkpoint uses: {@code tensors} itself when no MoE layer of {@code config} is fused
     * and no weight FP8-quantized, else a view with per-expert names over fused layers and FP8 weights read
     * dequantized ({@link Fp8Weights}).
     */
    public static TensorSource perExpert(TensorSource stored, ModelConfig config) {
        TensorSource tensors = Fp8Weights.of(stored, config);
        if (tensors instanceof FusedExperts || config.num_experts == 0 || config.hasLowRankExperts()) {
            return tensors;
        }
        FusedExperts view = new FusedExperts(tensors);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        for (int l = 0; l < config.num_hidden_layers; l++) {
            if (config.isMoeLayer(l) && isFused(tensors, layout, l)) {
                view.addLayer(layout, l, config);
            }
        }
        return view.slices.isEmpty() ? tensors : view;
    }

    /** Whether MoE layer {@code l} is stored fused. */
    public static boolean isFused(TensorSource tensors, CheckpointLayout layout, int l) {
        return !tensors.has(layout.expert(l, 0, Projection.GATE)) && tensors.has(gateUp(l));
    }

    /** {@code model.layers.L.mlp.experts.gate_up_proj}, [E, 2I, D]. */
    public static String gateUp(int layer) {
        return CheckpointLayout.layer(layer) + "mlp.experts.gate_up_proj";
    }

    /** {@code model.layers.L.mlp.experts.down_proj}, [E, D, I]. */
    public static String down(int layer) {
        return CheckpointLayout.layer(layer) + "mlp.experts.down_proj";
    }

    /** The router's name in a fused checkpoint: always under {@code mlp.} (Mixtral's block_sparse_moe renamed). */
    public static String router(int layer) {
        return CheckpointLayout.layer(layer) + "mlp.gate.weight";
    }

    /**
     * The stored tensor names {@code all} (a checkpoint's, in its order) with every fused tensor replaced by the
     * per-expert names it holds, a renamed router by its per-expert layout name, and FP8 weights' block scales left
     * out (the weights are read dequantized): what a writer copying "every tensor" through {@link #perExpert} writes.
     */
    public static List<String> perExpertNames(Collection<String> all, TensorSource tensors, ModelConfig config) {
        List<String> names = Fp8Weights.withoutScales(all, tensors);
        TensorSource view = perExpert(tensors, config);
        if (!(view instanceof FusedExperts fused)) {
            return names;
        }
        Map<String, List<String>> expand = new HashMap<>();
        fused.slices.forEach((perExpert, slice) -> expand.computeIfAbsent(slice.fused, k -> new ArrayList<>())
                .add(perExpert));
        fused.renamed.forEach((perExpert, stored) -> expand.put(stored, List.of(perExpert)));
        List<String> out = new ArrayList<>();
        for (String name : names) {
            List<String> parts = expand.get(name);
            if (parts == null) {
                out.add(name);
            } else {
                parts.stream().sorted().forEach(out::add);
            }
        }
        return out;
    }

    private void addLayer(CheckpointLayout layout, int l, ModelConfig config) {
        long i = config.expert_intermediate_size;
        for (int e = 0; e < config.num_experts; e++) {
            slices.put(layout.expert(l, e, Projection.GATE), new Slice(gateUp(l), e, 0, i));
            slices.put(layout.expert(l, e, Projection.UP), new Slice(gateUp(l), e, i, 2 * i));
            slices.put(layout.expert(l, e, Projection.DOWN), new Slice(down(l), e, 0, config.hidden_size));
        }
        if (!base.has(layout.routerGate(l)) && base.has(router(l))) {
            renamed.put(layout.routerGate(l), router(l));
        }
    }

    @Override
    public boolean has(String name) {
        Slice s = slices.get(name);
        return s != null ? base.has(s.fused) : base.has(storedName(name));
    }

    /** The slice's shape, [rows, cols]; throws naming the fused tensor when its shape cannot hold the expert. */
    @Override
    public long[] shape(String name) {
        Slice s = slices.get(name);
        if (s == null) {
            return base.shape(storedName(name));
        }
        long[] fused = base.shape(s.fused);
        if (fused.length != 3 || s.expert >= fused[0] || s.to > fused[1]) {
            // a shape that cannot hold the slice: report the fused tensor's own shape, which ModelSchema names
            throw new CheckpointFormatException(describe() + ": fused tensor " + s.fused + " has shape "
                    + Arrays.toString(fused) + ", which does not hold rows [" + s.from + ", " + s.to + ") of expert "
                    + s.expert);
        }
        return new long[] {s.to - s.from, fused[2]};
    }

    @Override
    public DType dtype(String name) {
        Slice s = slices.get(name);
        return base.dtype(s != null ? s.fused : storedName(name));
    }

    /** A new float32 'c'-order [rows, cols] array: the expert's rows of the fused tensor. */
    @Override
    public INDArray readFloat(String name) {
        Slice s = slices.get(name);
        return s == null ? base.readFloat(storedName(name)) : expertRows(name, s, fused(s.fused)).dup('c');
    }

    /**
     * For computing with: an expert's rows of the fused tensor as a view [rows, cols] of the base's stored tensor
     * (memory-mapped, in its stored type, no copy).
     */
    @Override
    public INDArray stored(String name) {
        Slice s = slices.get(name);
        return s == null ? base.stored(storedName(name)) : expertRows(name, s, base.stored(s.fused));
    }

    /** The expert's rows of {@code fused} [E, rows, cols]: a view [to-from, cols]; checks the fused shape first. */
    private INDArray expertRows(String name, Slice s, INDArray fused) {
        shape(name);
        return fused.get(NDArrayIndex.point(s.expert), NDArrayIndex.interval(s.from, s.to), NDArrayIndex.all());
    }

    @Override
    public String describe() {
        return base.describe();
    }

    private String storedName(String name) {
        return renamed.getOrDefault(name, name);
    }

    private synchronized INDArray fused(String name) {
        if (!name.equals(cachedName)) {
            cachedTensor = null; // release the previous one before reading the next
            cachedTensor = base.readFloat(name);
            cachedName = name;
        }
        return cachedTensor;
    }
}
