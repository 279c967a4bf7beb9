package org.sparkmoe.model;

import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.CheckpointFormatException;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.Fp8BlockMatrix;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.MlaConfig;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Function;
import java.util.function.Predicate;

/**
 * Every tensor a checkpoint must hold for its config.json, with the shape the config implies. Checking a
 * checkpoint against it reads headers only, so the driver can reject a bad model before any task starts.
 */
public final class ModelSchema {
    private ModelSchema() {
    }

    /** Hugging Face key → expected shape, in checkpoint order. */
    public static Map<String, long[]> expected(ModelConfig c) {
        Map<String, long[]> out = new LinkedHashMap<>();
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        long d = c.hidden_size;
        out.put(CheckpointLayout.embedTokens(), new long[] {c.vocab_size, d});
        for (int l = 0; l < c.num_hidden_layers; l++) {
            out.put(CheckpointLayout.inputNorm(l), new long[] {d});
            if (c.mla != null) {
                latentAttention(c, l, out);
            } else {
                groupedAttention(c, l, out);
            }
            out.put(CheckpointLayout.postAttentionNorm(l), new long[] {d});
            if (c.isMoeLayer(l)) {
                long i = c.expert_intermediate_size;
                out.put(layout.routerGate(l), new long[] {c.num_experts, d});
                if (c.routing.scoreCorrectionBias()) {
                    out.put(layout.scoreCorrectionBias(l), new long[] {c.num_experts});
                }
                if (c.clamped_experts) {
                    out.put(layout.routerBias(l), new long[] {c.num_experts});
                }
                if (c.hasCpExperts()) {
                    long r = c.low_rank_experts_rank;
                    for (Projection p : Projection.values()) {
                        out.put(layout.cpFactor(l, p, CpFactor.EXPERTS), new long[] {c.num_experts, r});
                        out.put(layout.cpFactor(l, p, CpFactor.IN), new long[] {p == Projection.DOWN ? i : d, r});
                        out.put(layout.cpFactor(l, p, CpFactor.OUT), new long[] {p == Projection.DOWN ? d : i, r});
                    }
                } else if (c.hasTrExperts()) {
                    long r = c.low_rank_experts_rank;
                    for (Projection p : Projection.values()) {
                        out.put(layout.trCore(l, p, TrCore.EXPERTS), new long[] {r, c.num_experts, r});
                        out.put(layout.trCore(l, p, TrCore.IN), new long[] {r, p == Projection.DOWN ? i : d, r});
                        out.put(layout.trCore(l, p, TrCore.OUT), new long[] {r, p == Projection.DOWN ? d : i, r});
                    }
                } else if (c.hasLowRankExperts()) {
                    long r = c.low_rank_experts_rank;
                    out.put(layout.sharedBase(l, Projection.GATE), new long[] {i, d});
                    out.put(layout.sharedBase(l, Projection.UP), new long[] {i, d});
                    out.put(layout.sharedBase(l, Projection.DOWN), new long[] {d, i});
                    out.put(layout.stackedLoraA(l, Projection.GATE), new long[] {c.num_experts, r, d});
                    out.put(layout.stackedLoraB(l, Projection.GATE), new long[] {c.num_experts, i, r});
                    out.put(layout.stackedLoraA(l, Projection.UP), new long[] {c.num_experts, r, d});
                    out.put(layout.stackedLoraB(l, Projection.UP), new long[] {c.num_experts, i, r});
                    out.put(layout.stackedLoraA(l, Projection.DOWN), new long[] {c.num_experts, r, i});
                    out.put(layout.stackedLoraB(l, Projection.DOWN), new long[] {c.num_experts, d, r});
                    if (c.clamped_experts) {
                        // gpt-oss: the experts' biases as gpt-oss stores them, gate and up interleaved
                        out.put(FusedExperts.gateUpBias(l), new long[] {c.num_experts, 2 * i});
                        out.put(FusedExperts.downBias(l), new long[] {c.num_experts, d});
                    }
                } else {
                    for (int e = 0; e < c.num_experts; e++) {
                        out.put(layout.expert(l, e, Projection.GATE), new long[] {i, d});
                        out.put(layout.expert(l, e, Projection.UP), new long[] {i, d});
                        out.put(layout.expert(l, e, Projection.DOWN), new long[] {d, i});
                        if (c.clamped_experts) {
                            out.put(layout.expertBias(l, e, Projection.GATE), new long[] {i});
                            out.put(layout.expertBias(l, e, Projection.UP), new long[] {i});
                            out.put(layout.expertBias(l, e, Projection.DOWN), new long[] {d});
                        }
                    }
                }
                if (c.hasSharedExpert()) {
                    long s = c.shared_expert_intermediate_size;
                    out.put(layout.sharedExpert(l, Projection.GATE), new long[] {s, d});
                    out.put(layout.sharedExpert(l, Projection.UP), new long[] {s, d});
                    out.put(layout.sharedExpert(l, Projection.DOWN), new long[] {d, s});
                    if (c.hasSharedExpertGate()) {
                        out.put(CheckpointLayout.sharedExpertGate(l), new long[] {1, d});
                    }
                }
            } else {
                long i = c.intermediate_size;
                out.put(CheckpointLayout.denseMlp(l, Projection.GATE), new long[] {i, d});
                out.put(CheckpointLayout.denseMlp(l, Projection.UP), new long[] {i, d});
                out.put(CheckpointLayout.denseMlp(l, Projection.DOWN), new long[] {d, i});
            }
        }
        out.put(CheckpointLayout.finalNorm(), new long[] {d});
        out.put(CheckpointLayout.lmHead(), new long[] {c.vocab_size, d});
        return out;
    }

    /** q/k/v/o projections, their biases and q/k norms of grouped-query attention. */
    private static void groupedAttention(ModelConfig c, int l, Map<String, long[]> out) {
        long d = c.hidden_size;
        long q = (long) c.num_attention_heads * c.head_dim;
        long kv = (long) c.num_key_value_heads * c.head_dim;
        out.put(CheckpointLayout.attention(l, 'q', "weight"), new long[] {q, d});
        out.put(CheckpointLayout.attention(l, 'k', "weight"), new long[] {kv, d});
        out.put(CheckpointLayout.attention(l, 'v', "weight"), new long[] {kv, d});
        out.put(CheckpointLayout.attention(l, 'o', "weight"), new long[] {d, q});
        if (c.qkv_bias) {
            out.put(CheckpointLayout.attention(l, 'q', "bias"), new long[] {q});
            out.put(CheckpointLayout.attention(l, 'k', "bias"), new long[] {kv});
            out.put(CheckpointLayout.attention(l, 'v', "bias"), new long[] {kv});
        }
        if (c.attention_bias) {
            out.put(CheckpointLayout.attention(l, 'o', "bias"), new long[] {d});
        }
        if (c.attention_sinks) {
            out.put(CheckpointLayout.attentionSinks(l), new long[] {c.num_attention_heads});
        }
        if (c.qkNorm == ModelConfig.QkNorm.PER_HEAD) {
            out.put(CheckpointLayout.attentionNorm(l, 'q'), new long[] {c.head_dim});
            out.put(CheckpointLayout.attentionNorm(l, 'k'), new long[] {c.head_dim});
        } else if (c.qkNorm == ModelConfig.QkNorm.WHOLE) {
            out.put(CheckpointLayout.attentionNorm(l, 'q'), new long[] {q});
            out.put(CheckpointLayout.attentionNorm(l, 'k'), new long[] {kv});
        }
    }

    /** DeepSeek's MLA: q_proj or q_a_proj/q_a_layernorm/q_b_proj; kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj; o. */
    private static void latentAttention(ModelConfig c, int l, Map<String, long[]> out) {
        MlaConfig m = c.mla;
        long d = c.hidden_size;
        long h = c.num_attention_heads;
        if (m.q_lora_rank() == null) {
            out.put(CheckpointLayout.attention(l, 'q', "weight"), new long[] {h * m.qk_head_dim(), d});
        } else {
            long r = m.q_lora_rank();
            out.put(CheckpointLayout.attention(l, "q_a_proj", "weight"), new long[] {r, d});
            if (c.attention_bias) {
                out.put(CheckpointLayout.attention(l, "q_a_proj", "bias"), new long[] {r});
            }
            out.put(CheckpointLayout.attention(l, "q_a_layernorm", "weight"), new long[] {r});
            out.put(CheckpointLayout.attention(l, "q_b_proj", "weight"), new long[] {h * m.qk_head_dim(), r});
        }
        long kvA = (long) m.kv_lora_rank() + m.qk_rope_head_dim();
        out.put(CheckpointLayout.attention(l, "kv_a_proj_with_mqa", "weight"), new long[] {kvA, d});
        if (c.attention_bias) {
            out.put(CheckpointLayout.attention(l, "kv_a_proj_with_mqa", "bias"), new long[] {kvA});
        }
        out.put(CheckpointLayout.attention(l, "kv_a_layernorm", "weight"), new long[] {m.kv_lora_rank()});
        out.put(CheckpointLayout.attention(l, "kv_b_proj", "weight"),
                new long[] {h * (m.qk_nope_head_dim() + m.v_head_dim()), m.kv_lora_rank()});
        out.put(CheckpointLayout.attention(l, 'o', "weight"), new long[] {d, h * m.v_head_dim()});
        if (c.attention_bias) {
            out.put(CheckpointLayout.attention(l, 'o', "bias"), new long[] {d});
        }
    }

    /**
     * Throws naming the first missing tensor (per-expert names: fused experts are checked through
     * {@link FusedExperts}), the first shape that disagrees with config.json or the first weight
     * whose dtype is not a floating-point one (U8, I32, BOOL, ... cannot be read as weights).
     */
    public static void check(ModelConfig config, TensorSource tensors) {
        TensorSource view = FusedExperts.perExpert(tensors, config);
        // an MXFP4 expert's dtype is U8 (its blocks and scales), which FusedExperts checks with their shapes
        check(config, view::has, view::shape,
                name -> view instanceof FusedExperts f && f.isPacked(name) ? null : view.dtype(name), view.describe());
    }

    /**
     * The same check of names and shapes for tensors not written yet: {@code shapes} maps each name to its shape
     * (fused experts seen per expert, as {@link FusedExperts} reads them).
     */
    public static void check(ModelConfig config, Map<String, long[]> shapes, String describe) {
        TensorSource headers = new TensorSource() {
            @Override
            public boolean has(String name) {
                return shapes.containsKey(name);
            }

            @Override
            public long[] shape(String name) {
                return shapes.get(name);
            }

            @Override
            public org.nd4j.linalg.api.ndarray.INDArray readFloat(String name) {
                throw new IllegalStateException(describe + ": tensor " + name + " is not written yet");
            }

            @Override
            public String describe() {
                return describe;
            }
        };
        TensorSource view = FusedExperts.perExpert(headers, config);
        check(config, view::has, view::shape, null, describe);
    }

    /**
     * As {@link #expected}, with gpt-oss's experts under the fused names and shapes transformers stores (its only
     * layout): per MoE layer gate_up_proj [E, D, 2I], gate_up_proj_bias [E, 2I], down_proj [E, I, D],
     * down_proj_bias [E, D] where expert 0's gate weight stood. The other types are as {@link #expected}.
     */
    public static Map<String, long[]> expectedStored(ModelConfig c) {
        Map<String, long[]> perExpert = expected(c);
        if (!c.clamped_experts) {
            return perExpert;
        }
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        java.util.Set<String> expertNames = new java.util.HashSet<>();
        for (int l = 0; l < c.num_hidden_layers; l++) {
            for (int e = 0; e < c.num_experts; e++) {
                for (Projection p : Projection.values()) {
                    expertNames.add(layout.expert(l, e, p));
                    expertNames.add(layout.expertBias(l, e, p));
                }
            }
        }
        long e = c.num_experts;
        long i = c.expert_intermediate_size;
        long d = c.hidden_size;
        Map<String, long[]> out = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> entry : perExpert.entrySet()) {
            String name = entry.getKey();
            if (!expertNames.contains(name)) {
                out.put(name, entry.getValue());
                continue;
            }
            for (int l = 0; l < c.num_hidden_layers; l++) {
                if (name.equals(layout.expert(l, 0, Projection.GATE))) {
                    out.put(FusedExperts.gateUp(l), new long[] {e, d, 2 * i});
                    out.put(FusedExperts.gateUpBias(l), new long[] {e, 2 * i});
                    out.put(FusedExperts.down(l), new long[] {e, i, d});
                    out.put(FusedExperts.downBias(l), new long[] {e, d});
                }
            }
        }
        return out;
    }

    /** The number of parameters (elements of all tensors) a checkpoint of this config holds. */
    public static long parameterCount(ModelConfig config) {
        long total = 0;
        for (Map.Entry<String, long[]> e : expected(config).entrySet()) {
            if (e.getKey().equals(CheckpointLayout.lmHead()) && config.tie_word_embeddings) {
                continue;
            }
            total = Math.addExact(total, Arrays.stream(e.getValue()).reduce(1, Math::multiplyExact));
        }
        return total;
    }

    /**
     * An F8_E4M3 tensor must be a linear weight of a decoder layer (not the embedding or LM head) of a checkpoint
     * whose config declares FP8 block quantization, with a {@code <name>_scale_inv} [⌈out/bo⌉, ⌈in/bi⌉] beside it.
     */
    private static void checkFp8(ModelConfig config, String name, long[] shape, Predicate<String> has,
                                 Function<String, long[]> shapeOf, String describe) {
        if (config.weight_block_size == null || shape.length != 2 || !name.startsWith("model.layers.")) {
            throw new CheckpointFormatException(describe + ": tensor " + name + " has dtype F8_E4M3; FP8 is read only "
                    + "for the linear weights of decoder layers, with quantization_config.weight_block_size in "
                    + "config.json");
        }
        String scale = name + "_scale_inv";
        long[] expected = {Fp8BlockMatrix.ceilDiv(shape[0], config.weight_block_size[0]),
                Fp8BlockMatrix.ceilDiv(shape[1], config.weight_block_size[1])};
        if (!has.test(scale)) {
            throw new CheckpointFormatException(describe + ": missing tensor " + scale + " (the block scales of FP8 "
                    + name + ")");
        }
        if (!Arrays.equals(shapeOf.apply(scale), expected)) {
            throw new CheckpointFormatException(describe + ": tensor " + scale + " has shape "
                    + Arrays.toString(shapeOf.apply(scale)) + " but " + Arrays.toString(shape) + " in blocks of "
                    + config.weight_block_size[0] + "×" + config.weight_block_size[1] + " implies "
                    + Arrays.toString(expected));
        }
    }

    /** @param dtypeOf each tensor's dtype, or null where the dtypes are not known yet */
    private static void check(ModelConfig config, Predicate<String> has, Function<String, long[]> shapeOf,
            Function<String, DType> dtypeOf, String describe) {
        for (Map.Entry<String, long[]> e : expected(config).entrySet()) {
            String name = e.getKey();
            if (!has.test(name)) {
                if (name.equals(CheckpointLayout.lmHead()) && config.tie_word_embeddings) {
                    continue;
                }
                throw new CheckpointFormatException(describe + ": missing tensor " + name);
            }
            long[] shape = shapeOf.apply(name);
            if (!Arrays.equals(shape, e.getValue())) {
                throw new CheckpointFormatException(describe + ": tensor " + name + " has shape "
                        + Arrays.toString(shape) + " but config.json implies " + Arrays.toString(e.getValue()));
            }
            DType dtype = dtypeOf == null ? null : dtypeOf.apply(name);
            if (dtype != null && dtype.isFp8()) {
                checkFp8(config, name, shape, has, shapeOf, describe);
            } else if (dtype != null && !dtype.isFloat()) {
                throw new CheckpointFormatException(describe + ": tensor " + name + " has dtype " + dtype
                        + "; expected a floating-point weight (F32, F16, BF16)");
            }
        }
    }
}
