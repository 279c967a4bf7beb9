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
 *
 * <p>gpt-oss stores its experts transposed, gate and up interleaved by column, with biases (transformers 5.17
 * {@code GptOssExperts}; the only layout it has):
 * <pre>
 *   model.layers.L.mlp.experts.gate_up_proj       [E, D, 2I]  expert e: gate_proj = columns 0, 2, 4, … (seen as
 *                                                             [I, D] through a transposed strided view), up_proj =
 *                                                             columns 1, 3, 5, …
 *   model.layers.L.mlp.experts.gate_up_proj_bias  [E, 2I]     gate bias = entries 0, 2, …; up bias = 1, 3, …
 *   model.layers.L.mlp.experts.down_proj          [E, I, D]   down_proj = its transpose [D, I]
 *   model.layers.L.mlp.experts.down_proj_bias     [E, D]
 * </pre>
 * The per-expert names are the qwen-style {@code mlp.experts.e.gate_proj.weight} (and {@code .bias}); the views are
 * strided, so products copy them per tile (see {@link org.sparkmoe.kernels.WeightStack}).
 *
 * <p>Released gpt-oss checkpoints store the two expert weights as MXFP4 ({@link Mxfp4}) in the Linear layout instead:
 * {@code gate_up_proj_blocks} U8 [E, 2I, D/32, 16] and {@code gate_up_proj_scales} U8 [E, 2I, D/32] (gate = the even
 * rows, up = the odd ones), {@code down_proj_blocks} [E, D, I/32, 16] and {@code down_proj_scales} [E, D, I/32].
 * {@link #packed} gives an expert's matrix as such a view (products widen it per tile); {@link #readFloat} decodes
 * one expert; the dtype of a packed name is U8.
 */
public final class FusedExperts implements TensorSource {
    /**
     * Where a per-expert name lives: rows from, from + step, … below {@code to} of expert {@code expert}'s matrix of the
     * fused tensor {@code fused} [E, rows, cols] (transposed first when {@code transposed}: [E, cols, rows] stored),
     * or entries of its vector for a fused bias [E, n].
     */
    private record Slice(String fused, int expert, long from, long to, long step, boolean transposed) {
        /** Whether the fused tensor is MXFP4 (the name of its {@code _blocks}, {@code _scales} pair's stem). */
        boolean packed(TensorSource base) {
            return !base.has(fused) && base.has(fused + BLOCKS);
        }

        Slice(String fused, int expert, long from, long to) {
            this(fused, expert, from, to, 1, false);
        }

        long count() {
            return (to - from + step - 1) / step;
        }
    }

    private static final String BLOCKS = "_blocks";
    private static final String SCALES = "_scales";

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

    /** Whether MoE layer {@code l} is stored fused (gpt-oss: also as MXFP4 blocks and scales). */
    public static boolean isFused(TensorSource tensors, CheckpointLayout layout, int l) {
        return !tensors.has(layout.expert(l, 0, Projection.GATE))
                && (tensors.has(gateUp(l)) || tensors.has(gateUp(l) + BLOCKS));
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
        fused.slices.forEach((perExpert, slice) -> {
            boolean packed = slice.packed(fused.base);
            expand.computeIfAbsent(packed ? slice.fused + BLOCKS : slice.fused, k -> new ArrayList<>()).add(perExpert);
            if (packed) {
                expand.put(slice.fused + SCALES, List.of());   // the scales are read with the blocks
            }
        });
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

    /** gpt-oss's {@code model.layers.L.mlp.experts.gate_up_proj_bias}, [E, 2I]. */
    public static String gateUpBias(int layer) {
        return gateUp(layer) + "_bias";
    }

    /** gpt-oss's {@code model.layers.L.mlp.experts.down_proj_bias}, [E, D]. */
    public static String downBias(int layer) {
        return down(layer) + "_bias";
    }

    private void addLayer(CheckpointLayout layout, int l, ModelConfig config) {
        long i = config.expert_intermediate_size;
        if (config.clamped_experts) {
            long d = config.hidden_size;
            // MXFP4 stores the Linear layout (rows = outputs): the same rows, not transposed
            boolean t = !base.has(gateUp(l) + BLOCKS);
            for (int e = 0; e < config.num_experts; e++) {
                slices.put(layout.expert(l, e, Projection.GATE), new Slice(gateUp(l), e, 0, 2 * i, 2, t));
                slices.put(layout.expert(l, e, Projection.UP), new Slice(gateUp(l), e, 1, 2 * i, 2, t));
                slices.put(layout.expert(l, e, Projection.DOWN), new Slice(down(l), e, 0, d, 1, t));
                slices.put(layout.expertBias(l, e, Projection.GATE), new Slice(gateUpBias(l), e, 0, 2 * i, 2, false));
                slices.put(layout.expertBias(l, e, Projection.UP), new Slice(gateUpBias(l), e, 1, 2 * i, 2, false));
                slices.put(layout.expertBias(l, e, Projection.DOWN), new Slice(downBias(l), e, 0, d, 1, false));
            }
            return;
        }
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
        return s != null ? base.has(s.fused) || s.packed(base) : base.has(storedName(name));
    }

    /**
     * The slice's shape, [rows, cols] (or [n] of a fused bias); throws naming the fused tensor when its shape cannot
     * hold the expert.
     */
    @Override
    public long[] shape(String name) {
        Slice s = slices.get(name);
        if (s == null) {
            return base.shape(storedName(name));
        }
        if (s.packed(base)) {
            return new long[] {s.count(), packedCols(s)};
        }
        long[] fused = base.shape(s.fused);
        boolean vector = fused.length == 2;
        int slicedAxis = vector ? 1 : s.transposed ? 2 : 1;                     // the axis the slice steps along
        if ((fused.length != 3 && !vector) || s.expert >= fused[0] || s.to > fused[slicedAxis]) {
            // a shape that cannot hold the slice: report the fused tensor's own shape, which ModelSchema names
            throw new CheckpointFormatException(describe() + ": fused tensor " + s.fused + " has shape "
                    + Arrays.toString(fused) + ", which does not hold " + (s.transposed ? "columns" : "rows") + " ["
                    + s.from + ", " + s.to + ") of expert " + s.expert);
        }
        if (vector) {
            return new long[] {s.count()};
        }
        return new long[] {s.count(), s.transposed ? fused[1] : fused[2]};
    }

    @Override
    public DType dtype(String name) {
        Slice s = slices.get(name);
        return s != null && s.packed(base) ? DType.U8 : base.dtype(s != null ? s.fused : storedName(name));
    }

    /** A new float32 'c'-order [rows, cols] array: the expert's rows of the fused tensor (MXFP4 decoded). */
    @Override
    public INDArray readFloat(String name) {
        Slice s = slices.get(name);
        if (s != null && s.packed(base)) {
            Mxfp4 m = packed(name);
            return org.nd4j.linalg.factory.Nd4j.create(m.decode(), new long[] {m.rows(), m.cols()}, 'c');
        }
        return s == null ? base.readFloat(storedName(name)) : expertRows(name, s, fused(s.fused)).dup('c');
    }

    /** Whether {@code name} is an expert matrix stored as MXFP4 (read it with {@link #packed}). */
    public boolean isPacked(String name) {
        Slice s = slices.get(name);
        return s != null && s.packed(base);
    }

    /**
     * An expert matrix stored as MXFP4, as a view of the stored blocks and scales (no copy); throws naming the tensors
     * when their shapes disagree with each other or cannot hold the expert.
     */
    public Mxfp4 packed(String name) {
        Slice s = slices.get(name);
        if (s == null || !s.packed(base)) {
            throw new IllegalArgumentException(name + " is not an MXFP4 expert matrix of " + describe());
        }
        long cols = packedCols(s);
        long perExpertRows = base.shape(s.fused + BLOCKS)[1];
        long blockBytes = cols / 2;
        long scaleBytes = cols / Mxfp4.BLOCK;
        long firstRow = s.expert * perExpertRows + s.from;
        return new Mxfp4(base.bytes(s.fused + BLOCKS), base.bytes(s.fused + SCALES), firstRow * blockBytes,
                firstRow * scaleBytes, (int) s.step, s.count(), cols);
    }

    /** The columns of the matrices of an MXFP4 pair [E, rows, cols/32, 16], [E, rows, cols/32]; checks both. */
    private long packedCols(Slice s) {
        String blocks = s.fused + BLOCKS;
        String scales = s.fused + SCALES;
        long[] b = base.shape(blocks);
        long[] sc = base.has(scales) ? base.shape(scales) : null;
        if (b.length != 4 || b[3] != Mxfp4.BLOCK / 2 || sc == null || sc.length != 3 || sc[0] != b[0]
                || sc[1] != b[1] || sc[2] != b[2] || base.dtype(blocks) != DType.U8 || base.dtype(scales) != DType.U8
                || s.expert >= b[0] || s.to > b[1]) {
            throw new CheckpointFormatException(describe() + ": MXFP4 tensors " + blocks + " "
                    + Arrays.toString(b) + " and " + scales + " " + (sc == null ? "(missing)" : Arrays.toString(sc))
                    + " must be U8 [E, rows, cols/32, 16] and [E, rows, cols/32] holding rows [" + s.from + ", "
                    + s.to + ") of expert " + s.expert);
        }
        return b[2] * Mxfp4.BLOCK;
    }

    /**
     * For computing with: an expert's rows of the fused tensor as a view [rows, cols] of the base's stored tensor
     * (memory-mapped, in its stored type, no copy); an MXFP4 expert decoded as {@link #readFloat} (one expert: use
     * {@link #packed} to compute on it where it lies).
     */
    @Override
    public INDArray stored(String name) {
        Slice s = slices.get(name);
        if (s != null && s.packed(base)) {
            return readFloat(name);
        }
        return s == null ? base.stored(storedName(name)) : expertRows(name, s, base.stored(s.fused));
    }

    @Override
    public java.nio.ByteBuffer bytes(String name) {
        return base.bytes(storedName(name));
    }

    /**
     * The expert's rows of {@code fused} [E, rows, cols] (of its transpose when the slice says so, or the entries of a
     * fused bias [E, n]): a view; checks the fused shape first.
     */
    private INDArray expertRows(String name, Slice s, INDArray fused) {
        shape(name);
        if (fused.rank() == 2) {
            return fused.get(NDArrayIndex.point(s.expert), NDArrayIndex.interval(s.from, s.step, s.to));
        }
        if (s.transposed) {
            return fused.get(NDArrayIndex.point(s.expert), NDArrayIndex.all(),
                    NDArrayIndex.interval(s.from, s.step, s.to)).transpose();
        }
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
