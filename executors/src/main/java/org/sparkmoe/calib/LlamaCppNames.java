package org.sparkmoe.calib;

import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.LinearInputs.Site;

import java.util.ArrayList;
import java.util.List;

/**
 * llama.cpp's GGUF tensor names for the weights that read each input of decoder layer N, as its HF→GGUF conversion
 * ({@code convert_hf_to_gguf.py}, {@code gguf-py/gguf/constants.py} and {@code tensor_mapping.py}) names them for the
 * model types calibrate reads. mixtral, qwen2_moe, qwen3_moe, olmoe, glm4_moe and gpt_oss share the grouped-query
 * names; gpt-oss's fused gate_up_proj is converted to separate gate and up tensors. DeepSeek's MLA: q (V2-Lite) or
 * q_a and q_b, kv_a_mqa, kv_b (older conversions) and the k_b / v_b that current conversions split it into for the
 * absorbed attention.
 * <pre>
 *   ATTN_IN         blk.N.attn_q, attn_k, attn_v           MLA: attn_q or attn_q_a, attn_kv_a_mqa
 *   ATTN_Q_LATENT   blk.N.attn_q_b                         ATTN_KV_LATENT  blk.N.attn_kv_b
 *   ATTN_Q_NOPE     blk.N.attn_k_b                         ATTN_V_LATENT   blk.N.attn_v_b
 *   ATTN_OUT        blk.N.attn_output
 *   FFN_IN          dense: blk.N.ffn_gate, ffn_up;  MoE: blk.N.ffn_gate_inp (router), ffn_gate_shexp, ffn_up_shexp,
 *                   ffn_gate_inp_shexp (Qwen2-MoE's shared-expert gate)
 *   FFN_INTER       blk.N.ffn_down                         SHARED_INTER    blk.N.ffn_down_shexp
 *   routed experts  blk.N.ffn_gate_exps, ffn_up_exps (input) and ffn_down_exps (intermediate)
 * </pre>
 * Each name ends in {@code .weight}.
 */
public final class LlamaCppNames {
    private LlamaCppNames() {
    }

    /** The weights of decoder layer {@code layer} that read {@code site}. */
    public static List<String> of(ModelConfig config, int layer, Site site) {
        List<String> names = new ArrayList<>();
        boolean moe = config.isMoeLayer(layer);
        switch (site) {
            case ATTN_IN -> {
                if (config.mla == null) {
                    names.addAll(List.of("attn_q", "attn_k", "attn_v"));
                } else {
                    names.addAll(List.of(config.mla.q_lora_rank() == null ? "attn_q" : "attn_q_a", "attn_kv_a_mqa"));
                }
            }
            case ATTN_Q_LATENT -> names.add("attn_q_b");
            case ATTN_KV_LATENT -> names.add("attn_kv_b");
            case ATTN_Q_NOPE -> names.add("attn_k_b");
            case ATTN_V_LATENT -> names.add("attn_v_b");
            case ATTN_OUT -> names.add("attn_output");
            case FFN_IN -> {
                if (!moe) {
                    names.addAll(List.of("ffn_gate", "ffn_up"));
                } else {
                    names.add("ffn_gate_inp");
                    if (hasSharedExpert(config)) {
                        names.addAll(List.of("ffn_gate_shexp", "ffn_up_shexp"));
                    }
                    if (config.modelType == ModelConfig.ModelType.QWEN2_MOE
                            && config.shared_expert_intermediate_size > 0) {
                        names.add("ffn_gate_inp_shexp");
                    }
                }
            }
            case FFN_INTER -> names.add("ffn_down");
            case SHARED_INTER -> names.add("ffn_down_shexp");
            default -> throw new IllegalArgumentException("no llama.cpp weight reads " + site);
        }
        return names.stream().map(n -> weight(layer, n)).toList();
    }

    /** The routed experts' weights that read their input: gate and up. */
    public static List<String> expertInputs(int layer) {
        return List.of(weight(layer, "ffn_gate_exps"), weight(layer, "ffn_up_exps"));
    }

    /** The routed experts' weight that reads their intermediate activation: down. */
    public static String expertIntermediates(int layer) {
        return weight(layer, "ffn_down_exps");
    }

    private static boolean hasSharedExpert(ModelConfig config) {
        return config.shared_expert_intermediate_size > 0 || config.n_shared_experts > 0;
    }

    private static String weight(int layer, String tensor) {
        return "blk." + layer + "." + tensor + ".weight";
    }
}
