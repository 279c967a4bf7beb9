package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Dense;

/**
 * The two ends of a decoder around its layers: the token embedding (in), the final RMSNorm and the LM head (out),
 * with the RoPE tables every layer reads. {@link MoeTransformer} runs them around its layers; a layer-sequential pass
 * ({@link LayerCache}) holds them alone, without any decoder layer. Immutable.
 */
public final class ModelEnds {
    private final ModelConfig config;
    private final INDArray embedTokens; // [V, D]
    private final RmsNorm finalNorm;
    private final INDArray lmHead;      // [V, D]
    private final RotaryEmbedding rope;

    public ModelEnds(ModelConfig config, INDArray embedTokens, RmsNorm finalNorm, INDArray lmHead) {
        this.config = config;
        this.embedTokens = embedTokens;
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
        this.rope = RotaryEmbedding.of(config);
    }

    public ModelConfig config() {
        return config;
    }

    /** The RoPE tables (per config). */
    public RotaryEmbedding rope() {
        return rope;
    }

    public RmsNorm finalNorm() {
        return finalNorm;
    }

    /** @return the LM head weight [V, D] */
    public INDArray lmHeadWeight() {
        return lmHead;
    }

    /** What the model computes in: FLOAT, or DOUBLE for a model loaded for gradient checks. */
    public DataType dataType() {
        return embedTokens.dataType() == DataType.DOUBLE ? DataType.DOUBLE : DataType.FLOAT;
    }

    /** The embedding rows of B sequences of S token ids (checked), widened to the model's type: [B·S, D]. */
    public INDArray embed(int[][] tokens) {
        INDArray rows = Nd4j.pullRows(embedTokens, 1, flatten(tokens));
        return rows.dataType() == dataType() ? rows : rows.castTo(dataType());
    }

    /** The final norm of the last layer's output: [N, D] → [N, D], what the LM head reads. */
    public INDArray finalNorm(INDArray hidden) {
        return finalNorm.forward(hidden);
    }

    /** Logits [N, V] of final hidden rows [N, D]. */
    public INDArray lmHead(INDArray finalHidden) {
        return Dense.linear(finalHidden, lmHead);
    }

    /** The B sequences' token ids, checked against the vocabulary and the RoPE table, flattened batch-major [B·S]. */
    int[] flatten(int[][] tokens) {
        if (tokens.length == 0 || tokens[0].length == 0) {
            throw new IllegalArgumentException("need at least one sequence of at least one token, got "
                    + tokens.length + " sequences");
        }
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
        return flat;
    }
}
