package org.sparkmoe.driver.calib;

import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.LayerRouterStats;

import java.util.List;
import java.util.Locale;

/**
 * {@code report.html}: one self-contained page (inline SVG and CSS, no script, no network) with the summary
 * table, per-layer expert-load bars, a layer × expert heatmap, per-file selection-rate heatmaps, co-selection
 * heatmaps and load imbalance and entropy per layer; for routers with a selection-only correction bias, the score
 * distribution before and after the bias and how many selections it changes; for group-limited routers, the load and
 * the kept count of each expert group.
 */
public final class CalibrationReport {
    private CalibrationReport() {
    }

    public static String html(String model, String split, CalibrationStats stats, int[] decoderLayers,
                              List<String> fileNames) {
        int experts = stats.layer(0).experts();
        int topK = stats.layer(0).topK();
        String[] expertLabels = new String[experts];
        for (int e = 0; e < experts; e++) {
            expertLabels[e] = "e" + e;
        }
        String[] layerLabels = new String[decoderLayers.length];
        for (int l = 0; l < decoderLayers.length; l++) {
            layerLabels[l] = "layer " + decoderLayers[l];
        }
        StringBuilder page = new StringBuilder();
        page.append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SparkMoE calibration</title>")
                .append("<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse}"
                        + "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
                        + "section{margin:18px 0}svg{margin:6px 14px 6px 0;vertical-align:top}</style></head><body>\n");
        page.append("<h1>Router calibration</h1>\n<p>")
                .append(Svg.esc(String.format(Locale.ROOT, "model %s, %s split, %d tokens, %d experts, top-%d, %d MoE layers",
                        model, split, stats.layer(0).tokens(), experts, topK, decoderLayers.length)))
                .append("</p>\n");
        page.append(summaryTable(stats, decoderLayers));

        page.append("<section><h2>Expert load per layer</h2><p>Selection rate (share of tokens routing to the expert); "
                + "the dashed line is a uniform router (K/E).</p>\n");
        double[][] rates = new double[decoderLayers.length][];
        for (int l = 0; l < decoderLayers.length; l++) {
            rates[l] = stats.layer(l).selectionRate();
            page.append(Svg.bars(layerLabels[l], rates[l], expertLabels, (double) topK / experts, "%.3f"));
        }
        page.append("</section>\n<section><h2>Layer × expert selection rate</h2>\n")
                .append(Svg.heatmap("selection rate", rates, layerLabels, expertLabels, "%.2f"))
                .append("</section>\n");

        page.append("<section><h2>Selection rate per file</h2>\n");
        for (int f = 0; f < fileNames.size(); f++) {
            double[][] fileRates = new double[decoderLayers.length][];
            for (int l = 0; l < decoderLayers.length; l++) {
                fileRates[l] = stats.file(f, l).selectionRate();
            }
            page.append(Svg.heatmap(fileNames.get(f) + " (" + stats.file(f, 0).tokens() + " tokens)", fileRates,
                    layerLabels, expertLabels, "%.2f"));
        }
        page.append("</section>\n<section><h2>Co-selection</h2><p>Share of tokens that select both experts "
                + "(the diagonal is the selection rate).</p>\n");
        for (int l = 0; l < decoderLayers.length; l++) {
            LayerRouterStats s = stats.layer(l);
            long[][] co = s.coselect();
            double[][] share = new double[experts][experts];
            for (int i = 0; i < experts; i++) {
                for (int j = 0; j < experts; j++) {
                    share[i][j] = (double) co[i][j] / s.tokens();
                }
            }
            page.append(Svg.heatmap(layerLabels[l], share, expertLabels, expertLabels, "%.2f"));
        }
        page.append("</section>\n<section><h2>Load imbalance and entropy per layer</h2>\n");
        List<CalibrationSummary.Layer> summary = CalibrationSummary.layers(stats, decoderLayers);
        page.append(Svg.bars("max/mean load (1 = balanced)",
                summary.stream().mapToDouble(CalibrationSummary.Layer::maxOverMean).toArray(), layerShort(decoderLayers),
                1.0, "%.2f"));
        page.append(Svg.bars("routing entropy per token (nats; dashed: ln E)",
                summary.stream().mapToDouble(CalibrationSummary.Layer::entropyPerToken).toArray(),
                layerShort(decoderLayers), Math.log(experts), "%.2f"));
        page.append("</section>\n");
        page.append(biasSection(stats, layerLabels));
        page.append(groupSection(stats, layerLabels));
        page.append("</body></html>\n");
        return page.toString();
    }

    /** Score histograms before and after the correction bias, and the selections it changes; empty without a bias. */
    private static String biasSection(CalibrationStats stats, String[] layerLabels) {
        if (!stats.layer(0).biased()) {
            return "";
        }
        String[] bins = new String[LayerRouterStats.BINS];
        for (int b = 0; b < bins.length; b++) {
            bins[b] = String.format(Locale.ROOT, "%.1f", LayerRouterStats.BIN_FROM + b * LayerRouterStats.BIN_WIDTH);
        }
        StringBuilder out = new StringBuilder("<section><h2>Correction bias</h2><p>The router ranks experts by score + "
                + "e_score_correction_bias but weighs them by the score alone. Share of (token, expert) scores per bin "
                + "of width " + LayerRouterStats.BIN_WIDTH + ", before and after the bias (the outer bins are "
                + "open-ended), and the selections the bias changes.</p>\n<table><tr><th>layer</th>"
                + "<th>tokens whose top-k it changes</th><th>selections it brings in</th></tr>\n");
        for (int l = 0; l < stats.moeLayers(); l++) {
            LayerRouterStats s = stats.layer(l);
            out.append(String.format(Locale.ROOT, "<tr><td>%s</td><td>%d (%.1f%%)</td><td>%d (%.1f%%)</td></tr>%n",
                    Svg.esc(layerLabels[l]), s.biasChangedTokens(), 100.0 * s.biasChangedTokens() / s.tokens(),
                    s.biasChangedSelections(), 100.0 * s.biasChangedSelections() / (s.tokens() * s.topK())));
        }
        out.append("</table>\n");
        for (int l = 0; l < stats.moeLayers(); l++) {
            LayerRouterStats s = stats.layer(l);
            double[][] share = {shares(s.scoreHistogram()), shares(s.correctedHistogram())};
            out.append(Svg.heatmap(layerLabels[l], share, new String[] {"score", "score + bias"}, bins, "%.2f"));
        }
        return out.append("</section>\n").toString();
    }

    /** Per-group load (share of selections) and kept rate (share of tokens); empty without group-limited routing. */
    private static String groupSection(CalibrationStats stats, String[] layerLabels) {
        int groups = stats.layer(0).groupKept().length;
        if (groups == 0) {
            return "";
        }
        String[] groupLabels = new String[groups];
        for (int g = 0; g < groups; g++) {
            groupLabels[g] = "g" + g;
        }
        double[][] load = new double[stats.moeLayers()][];
        double[][] kept = new double[stats.moeLayers()][groups];
        for (int l = 0; l < stats.moeLayers(); l++) {
            LayerRouterStats s = stats.layer(l);
            load[l] = shares(s.groupLoad());
            for (int g = 0; g < groups; g++) {
                kept[l][g] = s.tokens() == 0 ? 0 : (double) s.groupKept()[g] / s.tokens();
            }
        }
        return "<section><h2>Expert groups</h2><p>Share of selections per group, and share of tokens that kept the "
                + "group (group-limited selection keeps topk_group of n_group groups).</p>\n"
                + Svg.heatmap("load", load, layerLabels, groupLabels, "%.2f")
                + Svg.heatmap("kept", kept, layerLabels, groupLabels, "%.2f") + "</section>\n";
    }

    private static double[] shares(long[] counts) {
        double total = java.util.Arrays.stream(counts).sum();
        return java.util.Arrays.stream(counts).mapToDouble(c -> total == 0 ? 0 : c / total).toArray();
    }

    private static String[] layerShort(int[] decoderLayers) {
        String[] out = new String[decoderLayers.length];
        for (int l = 0; l < out.length; l++) {
            out[l] = "L" + decoderLayers[l];
        }
        return out;
    }

    private static String summaryTable(CalibrationStats stats, int[] decoderLayers) {
        StringBuilder t = new StringBuilder("<table><tr><th>layer</th><th>max/mean load</th><th>entropy/token</th>"
                + "<th>least-used expert</th><th>its rate</th><th>never selected</th></tr>\n");
        for (CalibrationSummary.Layer l : CalibrationSummary.layers(stats, decoderLayers)) {
            t.append(String.format(Locale.ROOT, "<tr><td>%d</td><td>%.3f</td><td>%.4f</td><td>%d</td><td>%.4f</td><td>%s</td></tr>%n",
                    l.decoderLayer(), l.maxOverMean(), l.entropyPerToken(), l.leastUsed(), l.leastUsedRate(),
                    l.neverSelected().isEmpty() ? "none" : l.neverSelected().toString()));
        }
        return t.append("</table>\n").toString();
    }
}
