package org.sparkmoe.io;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout.Projection;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Per-expert tensors seen in the fused layout, for writing a transformers-5-style checkpoint: the inverse of
 * {@link FusedExperts}. For every MoE layer L, {@link FusedExperts#gateUp} [E, 2I, D] stacks each expert's gate rows
 * then up rows, {@link FusedExperts#down} [E, D, I] stacks the down weights, and a Mixtral router moves to
 * {@link FusedExperts#router}. gpt-oss's own layout (its only one) is transposed and interleaved, with biases:
 * gate_up_proj [E, D, 2I] (gate = columns 0, 2, …, up = 1, 3, …), gate_up_proj_bias [E, 2I] likewise, down_proj
 * [E, I, D] and down_proj_bias [E, D]; an MXFP4 source is written widened (in the writer's dtype, bf16 for a released
 * checkpoint: exact). A writer reads a fused tensor expert by expert ({@link #writeBlocks}, {@link #readFloatBlock}):
 * one expert's slice is built at a time, never the whole [E, 2I, D]; {@link #readFloat} builds the whole from the
 * same slices.
 */
public final class FusingTensors implements TensorSource {
    private final TensorSource base;   // per-expert names (a FusedExperts view is fine)
    private final ModelConfig config;
    private final CheckpointLayout layout;
    private final Map<String, Integer> gateUps = new HashMap<>();  // fused name → layer
    private final Map<String, Integer> downs = new HashMap<>();
    private final Map<String, Integer> gateUpBiases = new HashMap<>();  // gpt-oss only
    private final Map<String, Integer> downBiases = new HashMap<>();    // gpt-oss only
    private final Map<String, String> routers = new HashMap<>();   // fused-layout router name → per-expert name

    private FusingTensors(TensorSource base, ModelConfig config) {
        this.base = base;
        this.config = config;
        this.layout = new CheckpointLayout(config.modelType);
        for (int l = 0; l < config.num_hidden_layers; l++) {
            if (config.isMoeLayer(l)) {
                gateUps.put(FusedExperts.gateUp(l), l);
                downs.put(FusedExperts.down(l), l);
                if (config.clamped_experts) {
                    gateUpBiases.put(FusedExperts.gateUpBias(l), l);
                    downBiases.put(FusedExperts.downBias(l), l);
                } else {
                    routers.put(FusedExperts.router(l), layout.routerGate(l));
                }
            }
        }
    }

    /** The fused view of {@code tensors} (which answers per-expert names) for a model of {@code config}. */
    public static FusingTensors of(TensorSource tensors, ModelConfig config) {
        if (config.num_experts == 0 || config.hasLowRankExperts()) {
            throw new IllegalArgumentException("the fused expert layout needs full MoE experts; model_type "
                    + config.modelType.name().toLowerCase() + (config.hasLowRankExperts() ? " with low-rank experts"
                    : " is dense"));
        }
        return new FusingTensors(FusedExperts.perExpert(tensors, config), config);
    }

    /**
     * {@code names} (per-expert names, in write order) with each MoE layer's 3·E expert weights replaced, where the
     * first of them stood, by its two fused tensors, and a Mixtral router by its fused-layout name.
     */
    public List<String> names(List<String> names) {
        Map<String, String> toFused = new HashMap<>();
        for (Map.Entry<String, Integer> g : gateUps.entrySet()) {
            int l = g.getValue();
            for (int e = 0; e < config.num_experts; e++) {
                toFused.put(layout.expert(l, e, Projection.GATE), g.getKey());
                toFused.put(layout.expert(l, e, Projection.UP), g.getKey());
                toFused.put(layout.expert(l, e, Projection.DOWN), FusedExperts.down(l));
                if (config.clamped_experts) {
                    toFused.put(layout.expertBias(l, e, Projection.GATE), FusedExperts.gateUpBias(l));
                    toFused.put(layout.expertBias(l, e, Projection.UP), FusedExperts.gateUpBias(l));
                    toFused.put(layout.expertBias(l, e, Projection.DOWN), FusedExperts.downBias(l));
                }
            }
        }
        routers.forEach((fused, perExpert) -> toFused.put(perExpert, fused));
        Set<String> out = new LinkedHashSet<>();
        for (String name : names) {
            out.add(toFused.getOrDefault(name, name));
        }
        return new ArrayList<>(out);
    }

    @Override
    public boolean has(String name) {
        return gateUps.containsKey(name) || downs.containsKey(name) || gateUpBiases.containsKey(name)
                || downBiases.containsKey(name) || base.has(perExpertName(name));
    }

    @Override
    public long[] shape(String name) {
        long e = config.num_experts;
        long i = config.expert_intermediate_size;
        long d = config.hidden_size;
        boolean gptOss = config.clamped_experts;
        if (gateUps.containsKey(name)) {
            return gptOss ? new long[] {e, d, 2 * i} : new long[] {e, 2 * i, d};
        }
        if (downs.containsKey(name)) {
            return gptOss ? new long[] {e, i, d} : new long[] {e, d, i};
        }
        if (gateUpBiases.containsKey(name)) {
            return new long[] {e, 2 * i};
        }
        if (downBiases.containsKey(name)) {
            return new long[] {e, d};
        }
        return base.shape(perExpertName(name));
    }

    /** The stored dtype of expert 0's weight (or bias) for a fused tensor; BF16 for an MXFP4 one (exact). */
    @Override
    public DType dtype(String name) {
        DType d;
        if (gateUps.containsKey(name) || downs.containsKey(name)) {
            Integer l = gateUps.containsKey(name) ? gateUps.get(name) : downs.get(name);
            d = base.dtype(layout.expert(l, 0, gateUps.containsKey(name) ? Projection.GATE : Projection.DOWN));
        } else if (gateUpBiases.containsKey(name) || downBiases.containsKey(name)) {
            Integer l = gateUpBiases.containsKey(name) ? gateUpBiases.get(name) : downBiases.get(name);
            d = base.dtype(layout.expertBias(l, 0, gateUpBiases.containsKey(name) ? Projection.GATE : Projection.DOWN));
        } else {
            d = base.dtype(perExpertName(name));
        }
        return d == DType.U8 ? DType.BF16 : d;
    }

    /** A fused tensor is written expert by expert: E blocks. */
    @Override
    public long writeBlocks(String name) {
        return fused(name) ? config.num_experts : 1;
    }

    @Override
    public INDArray readFloatBlock(String name, long block) {
        if (!fused(name)) {
            return TensorSource.super.readFloatBlock(name, block);
        }
        long[] shape = shape(name);
        return expert(name, Math.toIntExact(block)).reshape('c', prepend(1, shape));
    }

    @Override
    public INDArray readFloat(String name) {
        if (!fused(name)) {
            return base.readFloat(perExpertName(name));
        }
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, shape(name), 'c');    // [E, ...]
        for (int e = 0; e < config.num_experts; e++) {
            out.slice(e).assign(expert(name, e));
        }
        return out;
    }

    private boolean fused(String name) {
        return gateUps.containsKey(name) || downs.containsKey(name) || gateUpBiases.containsKey(name)
                || downBiases.containsKey(name);
    }

    /** [1, shape[1..]]: one expert's block of a fused tensor of {@code shape}. */
    private static long[] prepend(long first, long[] shape) {
        long[] out = shape.clone();
        out[0] = first;
        return out;
    }

    /**
     * Expert e's slice of a fused tensor, float32 'c'-order: gate rows then up rows [2I, D] and down [D, I]; gpt-oss's
     * transposed and interleaved by column, gate = 0, 2, …, up = 1, 3, …: gate_up [D, 2I], down [I, D], and its biases
     * gate_up [2I] (interleaved likewise) and down [D].
     */
    private INDArray expert(String name, int e) {
        long[] shape = java.util.Arrays.copyOfRange(shape(name), 1, shape(name).length);
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, shape, 'c');
        long i = config.expert_intermediate_size;
        boolean gptOss = config.clamped_experts;
        if (gateUps.containsKey(name)) {
            int l = gateUps.get(name);
            INDArray gate = base.readFloat(layout.expert(l, e, Projection.GATE));            // [I, D]
            INDArray up = base.readFloat(layout.expert(l, e, Projection.UP));                // [I, D]
            if (gptOss) {                                                                     // [D, 2I]
                out.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 2, 2 * i)).assign(gate.transpose());
                out.get(NDArrayIndex.all(), NDArrayIndex.interval(1, 2, 2 * i)).assign(up.transpose());
            } else {                                                                          // [2I, D]
                out.get(NDArrayIndex.interval(0, i), NDArrayIndex.all()).assign(gate);
                out.get(NDArrayIndex.interval(i, 2 * i), NDArrayIndex.all()).assign(up);
            }
        } else if (downs.containsKey(name)) {
            INDArray down = base.readFloat(layout.expert(downs.get(name), e, Projection.DOWN)); // [D, I]
            out.assign(gptOss ? down.transpose() : down);
        } else if (gateUpBiases.containsKey(name)) {                                          // [2I]
            int l = gateUpBiases.get(name);
            out.get(NDArrayIndex.interval(0, 2, 2 * i)).assign(base.readFloat(layout.expertBias(l, e, Projection.GATE)));
            out.get(NDArrayIndex.interval(1, 2, 2 * i)).assign(base.readFloat(layout.expertBias(l, e, Projection.UP)));
        } else {                                                                              // [D]
            out.assign(base.readFloat(layout.expertBias(downBiases.get(name), e, Projection.DOWN)));
        }
        return out;
    }

    @Override
    public String describe() {
        return base.describe() + " in the fused expert layout";
    }

    private String perExpertName(String name) {
        return routers.getOrDefault(name, name);
    }
}
