package org.sparkmoe.driver.calib;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExpertSaliencyStats;
import org.sparkmoe.io.ModelConfig;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * {@code expert-scores.json}, what expert pruning ranks by ({@code surgery prune --stats}, the KL report):
 * <pre>
 * {"model_type": "mixtral", "tokens": N, "min_expert_tokens": M,
 *  "layers": [{"layer": L, "experts": E, "top_k": K, "routed_tokens": [E], "frequency": [E], "reap": [E], "ean": [E]}],
 *  "rare_experts": [{"layer": L, "expert": e, "routed_tokens": n}]}
 * </pre>
 * Layers are the MoE layers in order, {@code layer} their decoder index; {@code frequency} = routed_tokens / tokens,
 * {@code reap} the mean over an expert's routed tokens of routing weight × ‖expert output‖₂ (0 for an expert that saw
 * none), {@code ean} the sum of ‖expert output‖₂ over them ({@link ExpertSaliencyStats}); all over the routed tokens
 * whatever {@code --all-experts} says. {@code rare_experts} lists the experts routed fewer than
 * {@code min_expert_tokens} tokens (empty when that is 0).
 */
public final class ExpertScoresJson {
    /** Of a rare expert: MoE layer's decoder index, expert, tokens routed to it. */
    public record Rare(int layer, int expert, long routedTokens) {
        @Override
        public String toString() {
            return String.format(Locale.ROOT, "layer %d expert %d (%d tokens)", layer, expert, routedTokens);
        }
    }

    private ExpertScoresJson() {
    }

    public static String of(ModelConfig config, CalibrationStats stats, int minExpertTokens) {
        int[] layers = CalibrationStats.moeLayerIndices(config);
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        long tokens = stats.layer(0).tokens();
        root.put("model_type", config.modelType.name().toLowerCase(Locale.ROOT));
        root.put("tokens", tokens);
        root.put("min_expert_tokens", minExpertTokens);
        ArrayNode list = root.putArray("layers");
        for (int l = 0; l < layers.length; l++) {
            ExpertSaliencyStats s = stats.saliency(l);
            ObjectNode node = list.addObject();
            node.put("layer", layers[l]);
            node.put("experts", s.experts());
            node.put("top_k", stats.layer(l).topK());
            long[] routed = s.routed();
            ArrayNode counts = node.putArray("routed_tokens");
            ArrayNode frequency = node.putArray("frequency");
            for (long n : routed) {
                counts.add(n);
                frequency.add(tokens == 0 ? 0.0 : (double) n / tokens);
            }
            doubles(node.putArray("reap"), s.reap());
            doubles(node.putArray("ean"), s.ean());
        }
        ArrayNode rare = root.putArray("rare_experts");
        for (Rare r : rare(config, stats, minExpertTokens)) {
            ObjectNode node = rare.addObject();
            node.put("layer", r.layer());
            node.put("expert", r.expert());
            node.put("routed_tokens", r.routedTokens());
        }
        try {
            return json.writeValueAsString(root) + "\n";
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising expert scores", e);
        }
    }

    /** The experts routed fewer than {@code minTokens} tokens, by layer then expert (none when minTokens is 0). */
    public static List<Rare> rare(ModelConfig config, CalibrationStats stats, int minTokens) {
        int[] layers = CalibrationStats.moeLayerIndices(config);
        List<Rare> out = new ArrayList<>();
        for (int l = 0; l < layers.length; l++) {
            long[] routed = stats.saliency(l).routed();
            for (int e = 0; e < routed.length; e++) {
                if (routed[e] < minTokens) {
                    out.add(new Rare(layers[l], e, routed[e]));
                }
            }
        }
        return out;
    }

    private static void doubles(ArrayNode array, double[] values) {
        for (double v : values) {
            array.add(v);
        }
    }
}
