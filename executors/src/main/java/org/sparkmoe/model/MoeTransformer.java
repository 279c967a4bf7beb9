package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Dense;

import java.util.ArrayList;
import java.util.List;

/**
 * A decoder-only MoE language model (Mixtral, Qwen2-MoE, or dense Mistral): embedding, decoder layers,
 * final RMSNorm, LM head. Immutable after loading; one instance serves every task of an executor JVM.
 */
public final class MoeTransformer {
    private final ModelConfig config;
    private final INDArray embedTokens; // [V, D]
    private final List<DecoderLayer> layers;
    private final RmsNorm finalNorm;
    private final INDArray lmHead;      // [V, D]
    private final RotaryEmbedding rope;

    public MoeTransformer(ModelConfig config, INDArray embedTokens, List<DecoderLayer> layers, RmsNorm finalNorm,
                          INDArray lmHead) {
        this.config = config;
        this.embedTokens = embedTokens;
        this.layers = List.copyOf(layers);
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
        this.rope = new RotaryEmbedding(config.head_dim, config.rope_theta,
                config.max_position_embeddings);
    }

    public ModelConfig config() {
        return config;
    }

    public List<DecoderLayer> layers() {
        return layers;
    }

    /** Logits only, with the config's experts per token. */
    public INDArray logits(int[][] tokens) {
        return forward(tokens, config.num_experts_per_tok, false).logits();
    }

    /**
     * @param tokens  B sequences of S token ids each
     * @param topK    experts per token (the config's value, or an override)
     * @param capture whether to keep hidden states, router logits and router inputs
     */
    public ForwardOutput forward(int[][] tokens, int topK, boolean capture) {
        int batch = tokens.length;
        int seq = tokens[0].length;
        if (seq > rope.positions()) {
            throw new IllegalArgumentException("sequence length " + seq + " exceeds max_position_embeddings "
                    + rope.positions());
        }
        int[] flat = new int[batch * seq];
        for (int b = 0; b < batch; b++) {
            if (tokens[b].length != seq) {
                throw new IllegalArgumentException("sequence " + b + " has " + tokens[b].length
                        + " tokens, expected " + seq);
            }
            for (int s = 0; s < seq; s++) {
                int id = tokens[b][s];
                if (id < 0 || id >= config.vocab_size) {
                    throw new IllegalArgumentException("token id " + id + " at sequence " + b + ", position " + s
                            + " is outside the vocabulary [0, " + config.vocab_size + ")");
                }
                flat[b * seq + s] = id;
            }
        }
        List<INDArray> hiddenStates = new ArrayList<>();
        List<INDArray> routerLogits = new ArrayList<>();
        List<INDArray> routerInputs = new ArrayList<>();
        INDArray hidden = Nd4j.pullRows(embedTokens, 1, flat);                        // [B·S, D]
        for (DecoderLayer layer : layers) {
            if (capture) {
                hiddenStates.add(hidden);
            }
            DecoderLayer.Output out = layer.forward(hidden, batch, seq, rope, topK);
            hidden = out.hidden();
            if (capture && out.routerLogits() != null) {
                routerLogits.add(out.routerLogits());
                routerInputs.add(out.moeInput());
            }
        }
        hidden = finalNorm.forward(hidden);
        if (capture) {
            hiddenStates.add(hidden);
        }
        return new ForwardOutput(Dense.linear(hidden, lmHead), hiddenStates, routerLogits, routerInputs);
    }
}
