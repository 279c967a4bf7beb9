package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** A one-layer Mixtral small enough to check by hand, and its tensors held in memory. */
final class SurgeryFixtures {
    static final int D = 3;
    static final int I = 2;

    private SurgeryFixtures() {
    }

    /** Mixtral, 2 layers, D 3, I 2, E experts, top-K. */
    static ModelConfig mixtral(int experts, int topK) {
        return ModelConfig.parse("{\"model_type\":\"mixtral\",\"architectures\":[\"MixtralForCausalLM\"],"
                + "\"vocab_size\":5,\"hidden_size\":" + D + ",\"intermediate_size\":" + I + ",\"num_hidden_layers\":2,"
                + "\"num_attention_heads\":1,\"num_key_value_heads\":1,\"head_dim\":2,\"rms_norm_eps\":1e-5,"
                + "\"max_position_embeddings\":8,\"rope_theta\":10000.0,\"num_local_experts\":" + experts
                + ",\"num_experts_per_tok\":" + topK + ",\"router_aux_loss_coef\":0.02,\"router_jitter_noise\":0.0,"
                + "\"output_router_logits\":false,\"dtype\":\"float32\"}", "test config");
    }

    /**
     * A DeepSeek model of 8 experts (D 3, I 2, both layers MoE, a plain q projection): {@code routing} holds the
     * model_type and router fields, e.g. {@code "model_type":"deepseek_v3","n_group":2,"topk_group":1}.
     */
    static ModelConfig deepseek(String routing) {
        return ModelConfig.parse("{" + routing + ",\"vocab_size\":5,\"hidden_size\":" + SurgeryFixtures.D
                + ",\"intermediate_size\":8,\"moe_intermediate_size\":" + SurgeryFixtures.I + ",\"num_hidden_layers\":2,"
                + "\"num_attention_heads\":1,\"num_key_value_heads\":1,\"rms_norm_eps\":1e-5,"
                + "\"max_position_embeddings\":8,\"rope_theta\":10000.0,\"q_lora_rank\":null,\"kv_lora_rank\":2,"
                + "\"qk_nope_head_dim\":2,\"qk_rope_head_dim\":2,\"v_head_dim\":2,\"n_routed_experts\":8,"
                + "\"num_experts_per_tok\":2,\"first_k_dense_replace\":0}", "test config");
    }

    /**
     * Expert e of layer l has every element of projection p equal to 100·l + 10·e + p.ordinal() + 1 (so a merge is
     * readable), and gate row e equal to e + 1.
     */
    static TensorSource experts(ModelConfig c) {
        Map<String, INDArray> t = new LinkedHashMap<>();
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        for (int l = 0; l < c.num_hidden_layers; l++) {
            for (int e = 0; e < c.num_experts; e++) {
                for (CheckpointLayout.Projection p : CheckpointLayout.Projection.values()) {
                    long[] shape = p == CheckpointLayout.Projection.DOWN ? new long[] {D, I} : new long[] {I, D};
                    t.put(layout.expert(l, e, p), Nd4j.valueArrayOf(shape, 100.0 * l + 10 * e + p.ordinal() + 1,
                            DataType.FLOAT));
                }
            }
            INDArray gate = Nd4j.zeros(DataType.FLOAT, c.num_experts, D);
            for (int e = 0; e < c.num_experts; e++) {
                gate.getRow(e).assign(e + 1);
            }
            t.put(layout.routerGate(l), gate);
        }
        return new MapSource(t);
    }

    record MapSource(Map<String, INDArray> tensors) implements TensorSource {
        @Override
        public boolean has(String name) {
            return tensors.containsKey(name);
        }

        @Override
        public long[] shape(String name) {
            return tensors.get(name).shape();
        }

        @Override
        public INDArray readFloat(String name) {
            INDArray t = tensors.get(name);
            if (t == null) {
                throw new IllegalArgumentException("no tensor " + name + " among " + Arrays.toString(tensors.keySet().toArray()));
            }
            return t.dup('c');
        }

        @Override
        public String describe() {
            return "test tensors";
        }
    }

    /** router-stats.json for one layer per entry of {@code counts}, with the given top-m sums and logit sums. */
    static String statsJson(int experts, long tokens, long[][] counts, double[][] logitSum, double[][] topm,
            String[] files, long[][][] fileCounts, long fileTokens) {
        StringBuilder s = new StringBuilder("{\"model\":\"m\",\"top_k\":2,\"experts\":" + experts + ",\"tokens\":" + tokens
                + ",\"layers\":[");
        for (int l = 0; l < counts.length; l++) {
            s.append(l > 0 ? "," : "").append("{\"count\":").append(Arrays.toString(counts[l]))
                    .append(",\"logit_sum\":").append(Arrays.toString(logitSum[l]))
                    .append(",\"topm_sq_sum\":").append(Arrays.toString(topm[l]))
                    .append(",\"tokens\":").append(tokens).append('}');
        }
        s.append("],\"files\":{");
        for (int f = 0; f < files.length; f++) {
            s.append(f > 0 ? "," : "").append('"').append(files[f]).append("\":{\"layers\":[");
            for (int l = 0; l < counts.length; l++) {
                s.append(l > 0 ? "," : "").append("{\"count\":").append(Arrays.toString(fileCounts[f][l]))
                        .append(",\"tokens\":").append(fileTokens).append('}');
            }
            s.append("]}");
        }
        return s.append("}}").toString();
    }
}
