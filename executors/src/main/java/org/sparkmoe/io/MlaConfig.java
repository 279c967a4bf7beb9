package org.sparkmoe.io;

/**
 * DeepSeek's multi-head latent attention sizes (config.json names): per head a query/key of
 * qk_nope_head_dim + qk_rope_head_dim and a value of v_head_dim; keys and values from a kv_lora_rank latent;
 * queries through a q_lora_rank bottleneck, or a plain q_proj when q_lora_rank is null.
 *
 * @param q_lora_rank     Q, or null for a plain q_proj (DeepSeek-V2-Lite)
 * @param rope_interleave RoPE on interleaved pairs (DeepSeek-V2 always; DeepSeek-V3's rope_interleave, default true)
 */
public record MlaConfig(Integer q_lora_rank, int kv_lora_rank, int qk_nope_head_dim, int qk_rope_head_dim,
                        int v_head_dim, boolean rope_interleave) {

    /** dn + dr: the query/key width per head. */
    public int qk_head_dim() {
        return qk_nope_head_dim + qk_rope_head_dim;
    }
}
