package org.sparkmoe.driver.calib;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.LayerRouterStats;

import java.util.List;

/**
 * {@code router-stats.json}: {@code {"model", "top_k", "experts", "tokens", "layers": [{"count", "prob_sum",
 * "logit_sum", "coselect", "entropy_sum", "topm_sq_sum", "tokens"}], "files": {"NAME": {"layers": [{"count",
 * "tokens"}]}}}}; layers are the MoE layers in order, {@code topm_sq_sum[m-1]} is the sum for top-m. Routers with a
 * correction bias add {@code "bias": {"score_histogram", "corrected_histogram", "bins_from", "bin_width",
 * "changed_tokens", "changed_selections"}} (the scores before and after the bias, the tokens whose top-K the bias
 * changes and the selections it brings in); group-limited routers add {@code "groups": {"kept", "load"}} (tokens that
 * kept each group, selections that fell in it). {@code prob_sum} holds the router's scores: softmax probabilities, or
 * the sigmoid scores of a sigmoid router.
 */
public final class RouterStatsJson {
    private RouterStatsJson() {
    }

    public static String of(String model, CalibrationStats stats, List<String> fileNames) {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        LayerRouterStats first = stats.layer(0);
        root.put("model", model);
        root.put("top_k", first.topK());
        root.put("experts", first.experts());
        root.put("tokens", first.tokens());
        ArrayNode layers = root.putArray("layers");
        for (int l = 0; l < stats.moeLayers(); l++) {
            LayerRouterStats s = stats.layer(l);
            ObjectNode node = layers.addObject();
            longs(node.putArray("count"), s.count());
            doubles(node.putArray("prob_sum"), s.probSum());
            doubles(node.putArray("logit_sum"), s.logitSum());
            ArrayNode co = node.putArray("coselect");
            for (long[] row : s.coselect()) {
                longs(co.addArray(), row);
            }
            node.put("entropy_sum", s.entropySum());
            doubles(node.putArray("topm_sq_sum"), s.topmSqSum());
            node.put("tokens", s.tokens());
            if (s.biased()) {
                ObjectNode bias = node.putObject("bias");
                longs(bias.putArray("score_histogram"), s.scoreHistogram());
                longs(bias.putArray("corrected_histogram"), s.correctedHistogram());
                bias.put("bins_from", LayerRouterStats.BIN_FROM);
                bias.put("bin_width", LayerRouterStats.BIN_WIDTH);
                bias.put("changed_tokens", s.biasChangedTokens());
                bias.put("changed_selections", s.biasChangedSelections());
            }
            if (s.groupKept().length > 0) {
                ObjectNode groups = node.putObject("groups");
                longs(groups.putArray("kept"), s.groupKept());
                longs(groups.putArray("load"), s.groupLoad());
            }
        }
        ObjectNode files = root.putObject("files");
        for (int f = 0; f < fileNames.size(); f++) {
            ArrayNode perLayer = files.putObject(fileNames.get(f)).putArray("layers");
            for (int l = 0; l < stats.moeLayers(); l++) {
                ObjectNode node = perLayer.addObject();
                longs(node.putArray("count"), stats.file(f, l).count());
                node.put("tokens", stats.file(f, l).tokens());
            }
        }
        try {
            return json.writeValueAsString(root) + "\n";
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising router statistics", e);
        }
    }

    private static void longs(ArrayNode array, long[] values) {
        for (long v : values) {
            array.add(v);
        }
    }

    private static void doubles(ArrayNode array, double[] values) {
        for (double v : values) {
            array.add(v);
        }
    }
}
