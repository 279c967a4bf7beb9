package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.moe.SparseMoeBlock;
import org.sparkmoe.moe.SwiGluMlp;

/**
 * One pre-norm decoder layer: {@code h = x + attn(norm1(x)); out = h + ffn(norm2(h))}, where the FFN is a
 * sparse MoE block or (Qwen2-MoE mlp_only layers, Mistral) a dense SwiGLU MLP.
 */
public final class DecoderLayer {
    private final RmsNorm inputNorm;
    private final Attention attention;
    private final RmsNorm postAttentionNorm;
    private final SparseMoeBlock moe;   // null for a dense layer
    private final SwiGluMlp mlp;        // null for an MoE layer

    public DecoderLayer(RmsNorm inputNorm, Attention attention, RmsNorm postAttentionNorm, SparseMoeBlock moe,
                        SwiGluMlp mlp) {
        if ((moe == null) == (mlp == null)) {
            throw new IllegalArgumentException("a decoder layer has exactly one of an MoE block and a dense MLP");
        }
        this.inputNorm = inputNorm;
        this.attention = attention;
        this.postAttentionNorm = postAttentionNorm;
        this.moe = moe;
        this.mlp = mlp;
    }

    public boolean isMoe() {
        return moe != null;
    }

    public SparseMoeBlock moe() {
        return moe;
    }

    /**
     * Output of a layer: hidden [B·S, D] and, for an MoE layer, router logits [B·S, E] and the MoE block's input
     * [B·S, D] (the post-attention norm's output, which the router and the experts read); both null otherwise.
     */
    public record Output(INDArray hidden, INDArray routerLogits, INDArray moeInput) {
    }

    public Output forward(INDArray x, int batch, int seq, RotaryEmbedding rope, int topK) {
        INDArray h = x.add(attention.forward(inputNorm.forward(x), batch, seq, rope));   // [B·S, D]
        INDArray normed = postAttentionNorm.forward(h);
        if (moe == null) {
            return new Output(h.addi(mlp.forward(normed)), null, null);
        }
        SparseMoeBlock.Output block = moe.forward(normed, topK);
        return new Output(h.addi(block.hidden()), block.routerLogits(), normed);
    }
}
