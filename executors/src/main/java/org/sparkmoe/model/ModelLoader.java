package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointFormatException;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.moe.ExpertWeights;
import org.sparkmoe.moe.Router;
import org.sparkmoe.moe.SparseMoeBlock;
import org.sparkmoe.moe.SwiGluMlp;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** Builds a {@link MoeTransformer} from checkpoint tensors, checking every shape against config.json. */
public final class ModelLoader {
    private final ModelConfig config;
    private final TensorSource tensors;
    private final CheckpointLayout layout;

    private ModelLoader(ModelConfig config, TensorSource tensors) {
        this.config = config;
        this.tensors = tensors;
        this.layout = new CheckpointLayout(config.modelType);
    }

    public static MoeTransformer load(ModelConfig config, TensorSource tensors, GroupedGemm gemm) {
        return new ModelLoader(config, tensors).build(gemm);
    }

    private MoeTransformer build(GroupedGemm gemm) {
        int d = config.hidden_size;
        INDArray embed = tensor(CheckpointLayout.embedTokens(), config.vocab_size, d);
        List<DecoderLayer> layers = new ArrayList<>();
        for (int l = 0; l < config.num_hidden_layers; l++) {
            layers.add(layer(l, gemm));
        }
        RmsNorm finalNorm = new RmsNorm(tensor(CheckpointLayout.finalNorm(), d), config.rms_norm_eps);
        INDArray lmHead = config.tie_word_embeddings && !tensors.has(CheckpointLayout.lmHead())
                ? embed : tensor(CheckpointLayout.lmHead(), config.vocab_size, d);
        return new MoeTransformer(config, embed, layers, finalNorm, lmHead);
    }

    private DecoderLayer layer(int l, GroupedGemm gemm) {
        int d = config.hidden_size;
        int q = config.num_attention_heads * config.head_dim;
        int kv = config.num_key_value_heads * config.head_dim;
        boolean bias = config.qkv_bias;
        Attention attention = new Attention(
                tensor(CheckpointLayout.attention(l, 'q', "weight"), q, d),
                tensor(CheckpointLayout.attention(l, 'k', "weight"), kv, d),
                tensor(CheckpointLayout.attention(l, 'v', "weight"), kv, d),
                tensor(CheckpointLayout.attention(l, 'o', "weight"), d, q),
                bias ? tensor(CheckpointLayout.attention(l, 'q', "bias"), q) : null,
                bias ? tensor(CheckpointLayout.attention(l, 'k', "bias"), kv) : null,
                bias ? tensor(CheckpointLayout.attention(l, 'v', "bias"), kv) : null,
                config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.sliding_window);
        RmsNorm inputNorm = new RmsNorm(tensor(CheckpointLayout.inputNorm(l), d), config.rms_norm_eps);
        RmsNorm postNorm = new RmsNorm(tensor(CheckpointLayout.postAttentionNorm(l), d), config.rms_norm_eps);
        if (!config.isMoeLayer(l)) {
            int i = config.intermediate_size;
            SwiGluMlp mlp = new SwiGluMlp(
                    tensor(CheckpointLayout.denseMlp(l, Projection.GATE), i, d),
                    tensor(CheckpointLayout.denseMlp(l, Projection.UP), i, d),
                    tensor(CheckpointLayout.denseMlp(l, Projection.DOWN), d, i));
            return new DecoderLayer(inputNorm, attention, postNorm, null, mlp);
        }
        return new DecoderLayer(inputNorm, attention, postNorm, moeBlock(l, gemm), null);
    }

    private SparseMoeBlock moeBlock(int l, GroupedGemm gemm) {
        int d = config.hidden_size;
        int e = config.num_experts;
        int i = config.expert_intermediate_size;
        Router router = new Router(tensor(layout.routerGate(l), e, d), config.norm_topk_prob);
        ExpertWeights experts = new ExpertWeights(
                stackExperts(l, Projection.GATE, i, d),
                stackExperts(l, Projection.UP, i, d),
                stackExperts(l, Projection.DOWN, d, i));
        SwiGluMlp shared = null;
        INDArray sharedGate = null;
        if (config.hasSharedExpert()) {
            int s = config.shared_expert_intermediate_size;
            shared = new SwiGluMlp(
                    tensor(CheckpointLayout.sharedExpert(l, Projection.GATE), s, d),
                    tensor(CheckpointLayout.sharedExpert(l, Projection.UP), s, d),
                    tensor(CheckpointLayout.sharedExpert(l, Projection.DOWN), d, s));
            sharedGate = tensor(CheckpointLayout.sharedExpertGate(l), 1, d);
        }
        return new SparseMoeBlock(router, experts, shared, sharedGate, gemm);
    }

    /** The E experts' [rows, cols] weights of one projection stacked into [E, rows, cols]. */
    private INDArray stackExperts(int l, Projection p, int rows, int cols) {
        INDArray stacked = Nd4j.createUninitialized(DataType.FLOAT, new long[] {config.num_experts, rows, cols}, 'c');
        for (int e = 0; e < config.num_experts; e++) {
            stacked.slice(e).assign(tensor(layout.expert(l, e, p), rows, cols));
        }
        return stacked;
    }

    private INDArray tensor(String name, long... expectedShape) {
        if (!tensors.has(name)) {
            throw new CheckpointFormatException(tensors.describe() + ": missing tensor " + name);
        }
        INDArray t = tensors.readFloat(name);
        if (!Arrays.equals(t.shape(), expectedShape)) {
            throw new CheckpointFormatException(tensors.describe() + ": tensor " + name + " has shape "
                    + Arrays.toString(t.shape()) + " but config.json implies " + Arrays.toString(expectedShape));
        }
        return t;
    }
}
