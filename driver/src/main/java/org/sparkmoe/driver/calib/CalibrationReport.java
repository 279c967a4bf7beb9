package org.sparkmoe.driver.calib;

import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.LayerRouterStats;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code report.html}: one self-contained page (inline SVG and CSS, no script, no network) that stays readable from 8
 * experts × 4 layers to 128 × 48 and beyond: a per-layer summary table (load imbalance, routing entropy, dead and
 * rare experts, the most co-selected pair and, when calibrate wrote REAP scores, their spread), one layer × expert
 * load map for the whole model, load imbalance and entropy per layer, a drill-down for the worst layers (sorted
 * expert loads, the top co-selected pairs, the rare experts), and the largest differences between files; for
 * routers with a selection-only correction bias, the score distribution before and after the bias and how many
 * selections it changes; for group-limited routers, the load and the kept count of each expert group.
 */
public final class CalibrationReport {
    /** Layers drilled into: the ones with the largest max/mean load. */
    public static final int WORST_LAYERS = 3;
    /** Co-selected pairs listed per drilled layer. */
    static final int TOP_PAIRS = 10;
    /** An expert is rare below this fraction of a uniform router's selection rate K/E. */
    static final double RARE = 0.1;
    /** Dead or rare experts named per drilled layer. */
    static final int LISTED = 24;

    private CalibrationReport() {
    }

    /** The report without REAP scores, rare meaning under {@link #RARE} of the uniform rate. */
    public static String html(String model, String split, CalibrationStats stats, int[] decoderLayers,
                              List<String> fileNames) {
        return html(model, split, stats, decoderLayers, fileNames, Map.of(), 0);
    }

    /**
     * @param reap            decoder layer → REAP score per expert (the calibration's saliency); empty: no REAP column.
     *                        Layers missing from it, or with another expert count, show "—".
     * @param minExpertTokens calibrate's {@code --min-expert-tokens}: when above 0, an expert is rare when selected
     *                        by fewer tokens than this (the experts expert-scores.json lists, less the dead ones);
     *                        0: under {@link #RARE} of the uniform rate
     */
    public static String html(String model, String split, CalibrationStats stats, int[] decoderLayers,
                              List<String> fileNames, Map<Integer, double[]> reap, int minExpertTokens) {
        int experts = stats.layer(0).experts();
        int topK = stats.layer(0).topK();
        double uniform = (double) topK / experts;
        String[] expertLabels = new String[experts];
        for (int e = 0; e < experts; e++) {
            expertLabels[e] = "e" + e;
        }
        String[] layerLabels = new String[decoderLayers.length];
        for (int l = 0; l < decoderLayers.length; l++) {
            layerLabels[l] = "layer " + decoderLayers[l];
        }
        List<LayerView> views = new ArrayList<>();
        for (int l = 0; l < decoderLayers.length; l++) {
            double[] scores = reap.get(decoderLayers[l]);
            views.add(new LayerView(decoderLayers[l], stats.layer(l),
                    scores != null && scores.length == experts ? scores : null, minExpertTokens));
        }
        StringBuilder page = new StringBuilder();
        page.append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SparkMoE calibration</title>")
                .append("<style>body{font-family:sans-serif;margin:20px;color:#222}table{border-collapse:collapse}"
                        + "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
                        + "tr.worst td{background:#fde8e8}details{margin:10px 0}summary{cursor:pointer;font-weight:bold}"
                        + "section{margin:18px 0}svg{margin:6px 14px 6px 0;vertical-align:top}</style></head><body>\n");
        page.append("<h1>Router calibration</h1>\n<p>")
                .append(Svg.esc(String.format(Locale.ROOT, "model %s, %s split, %d tokens, %d experts, top-%d, %d MoE layers",
                        model, split, stats.layer(0).tokens(), experts, topK, decoderLayers.length)))
                .append("</p>\n");
        List<LayerView> worst = new ArrayList<>(views);
        worst.sort(Comparator.comparingDouble((LayerView v) -> v.stats.maxOverMeanLoad()).reversed());
        worst = worst.subList(0, Math.min(WORST_LAYERS, worst.size()));
        page.append(summaryTable(views, worst, experts, !reap.isEmpty(), minExpertTokens));

        double[][] rates = new double[decoderLayers.length][];
        for (int l = 0; l < decoderLayers.length; l++) {
            rates[l] = stats.layer(l).selectionRate();
        }
        page.append("<section><h2>Layer × expert load</h2><p>Selection rate (share of tokens routing to the expert) "
                + "against a uniform router's K/E = ").append(String.format(Locale.ROOT, "%.4f", uniform))
                .append(": red above, blue below, dark grey never selected. Hover a cell for its rate.</p>\n")
                .append(Svg.loadMap("heatmap", "selection rate ÷ K/E", rates, uniform, layerShort(decoderLayers),
                        expertLabels, "%.4f"))
                .append("</section>\n");
        page.append("<section><h2>Load imbalance and entropy per layer</h2>\n");
        page.append(Svg.bars("max/mean load (1 = balanced)",
                views.stream().mapToDouble(v -> v.stats.maxOverMeanLoad()).toArray(), layerShort(decoderLayers),
                1.0, "%.2f"));
        page.append(Svg.bars("routing entropy per token (nats; dashed: ln E)",
                views.stream().mapToDouble(v -> v.entropy()).toArray(), layerShort(decoderLayers), Math.log(experts),
                "%.2f"));
        page.append("</section>\n");
        page.append(worstLayers(worst, expertLabels, uniform));
        page.append(fileSection(stats, decoderLayers, fileNames));
        page.append(biasSection(stats, layerLabels));
        page.append(groupSection(stats, layerLabels));
        if (stats.gates() != null) {
            page.append(new MumoeExperts(stats.gates(), fileNames).html());
        }
        page.append("</body></html>\n");
        return page.toString();
    }

    /**
     * One MoE layer's statistics and, when known, its REAP scores [E]; rare below {@code minTokens} selections when
     * that is above 0.
     */
    private record LayerView(int decoderLayer, LayerRouterStats stats, double[] reap, int minTokens) {
        double entropy() {
            return stats.tokens() == 0 ? 0 : stats.entropySum() / stats.tokens();
        }

        List<Integer> dead() {
            List<Integer> out = new ArrayList<>();
            long[] count = stats.count();
            for (int e = 0; e < count.length; e++) {
                if (count[e] == 0) {
                    out.add(e);
                }
            }
            return out;
        }

        /** Selected, but fewer than {@code minTokens} times or, without it, below {@link #RARE} of the uniform rate. */
        List<Integer> rare() {
            List<Integer> out = new ArrayList<>();
            double[] rate = stats.selectionRate();
            long[] count = stats.count();
            double threshold = RARE * stats.topK() / stats.experts();
            for (int e = 0; e < rate.length; e++) {
                if (count[e] > 0 && (minTokens > 0 ? count[e] < minTokens : rate[e] < threshold)) {
                    out.add(e);
                }
            }
            return out;
        }

        /** The {@code n} most co-selected pairs i < j, by tokens, largest first. */
        List<long[]> topPairs(int n) {
            long[][] co = stats.coselect();
            List<long[]> pairs = new ArrayList<>();
            for (int i = 0; i < co.length; i++) {
                for (int j = i + 1; j < co.length; j++) {
                    if (co[i][j] > 0) {
                        pairs.add(new long[]{i, j, co[i][j]});
                    }
                }
            }
            pairs.sort(Comparator.comparingLong((long[] p) -> p[2]).reversed());
            return pairs.subList(0, Math.min(n, pairs.size()));
        }
    }

    private static String summaryTable(List<LayerView> views, List<LayerView> worst, int experts, boolean withReap,
                                       int minExpertTokens) {
        String rare = minExpertTokens > 0
                ? "selected by fewer than " + minExpertTokens + " tokens (--min-expert-tokens)"
                : "selected, but at under " + (int) (RARE * 100) + "% of the uniform rate K/E";
        StringBuilder t = new StringBuilder("<section><h2>Per-layer summary</h2><p>Dead: never selected. Rare: "
                + rare + ". Entropy ÷ ln E: 1 is "
                + "a uniform router. Co-selection: share of tokens that select both." + (withReap
                ? " REAP (from expert-scores.json): the largest and smallest expert score over the layer's median."
                : "") + " Shaded rows are drilled into below.</p>\n<table><tr><th>layer</th><th>max/mean load</th>"
                + "<th>entropy/token</th><th>÷ ln E</th><th>dead</th><th>rare</th><th>least-used expert (rate)</th>"
                + "<th>top co-selected pair</th>" + (withReap ? "<th>REAP max/median</th><th>REAP min/median</th>" : "")
                + "</tr>\n");
        for (LayerView v : views) {
            LayerRouterStats s = v.stats;
            double[] rate = s.selectionRate();
            int least = 0;
            for (int e = 1; e < rate.length; e++) {
                if (rate[e] < rate[least]) {
                    least = e;
                }
            }
            List<long[]> pair = v.topPairs(1);
            String top = pair.isEmpty() ? "—" : String.format(Locale.ROOT, "e%d+e%d (%.3f)", pair.get(0)[0],
                    pair.get(0)[1], (double) pair.get(0)[2] / s.tokens());
            boolean isWorst = worst.contains(v);
            t.append(String.format(Locale.ROOT, "<tr%s><td>%s</td><td>%.3f</td><td>%.4f</td><td>%.3f</td><td>%d</td>"
                            + "<td>%d</td><td>e%d (%.4f)</td><td>%s</td>", isWorst ? " class=\"worst\"" : "",
                    String.valueOf(v.decoderLayer), s.maxOverMeanLoad(), v.entropy(),
                    v.entropy() / Math.log(experts), v.dead().size(), v.rare().size(), least, rate[least], top));
            if (withReap) {
                t.append(v.reap == null ? "<td>—</td><td>—</td>" : reapSpread(v.reap));
            }
            t.append("</tr>\n");
        }
        return t.append("</table></section>\n").toString();
    }

    /** The largest and smallest score over the median, as two cells ("—" where the median is 0). */
    private static String reapSpread(double[] reap) {
        double[] sorted = reap.clone();
        Arrays.sort(sorted);
        int n = sorted.length;
        double median = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
        if (!(median > 0)) {
            return "<td>—</td><td>—</td>";
        }
        return String.format(Locale.ROOT, "<td>%.2f</td><td>%.3f</td>", sorted[n - 1] / median, sorted[0] / median);
    }

    /** Per worst layer: its experts' loads sorted, the top co-selected pairs, the dead and rare experts. */
    private static String worstLayers(List<LayerView> worst, String[] expertLabels, double uniform) {
        StringBuilder out = new StringBuilder("<section><h2>Worst layers</h2><p>The " + worst.size() + " layers with "
                + "the largest max/mean load. Lift: the pair's share over the product of both experts' rates (1: "
                + "chosen independently).</p>\n");
        for (LayerView v : worst) {
            LayerRouterStats s = v.stats;
            double[] rate = s.selectionRate();
            Integer[] order = new Integer[rate.length];
            for (int e = 0; e < order.length; e++) {
                order[e] = e;
            }
            Arrays.sort(order, Comparator.comparingDouble((Integer e) -> rate[e]).reversed());
            double[] sorted = new double[rate.length];
            String[] labels = new String[rate.length];
            for (int i = 0; i < order.length; i++) {
                sorted[i] = rate[order[i]];
                labels[i] = expertLabels[order[i]];
            }
            out.append(String.format(Locale.ROOT, "<details open id=\"layer-%d\"><summary>layer %d: max/mean load "
                    + "%.3f, entropy %.4f nats, %d dead, %d rare</summary>\n", v.decoderLayer, v.decoderLayer,
                    s.maxOverMeanLoad(), v.entropy(), v.dead().size(), v.rare().size()));
            out.append(Svg.bars("layer " + v.decoderLayer + ": selection rate, experts by load (dashed: K/E)", sorted,
                    labels, uniform, "%.3f"));
            out.append("<table><tr><th>pair</th><th>tokens</th><th>share</th><th>lift</th></tr>\n");
            for (long[] p : v.topPairs(TOP_PAIRS)) {
                double share = (double) p[2] / s.tokens();
                out.append(String.format(Locale.ROOT, "<tr><td>e%d + e%d</td><td>%d</td><td>%.4f</td><td>%.2f</td></tr>%n",
                        p[0], p[1], p[2], share, share / (rate[(int) p[0]] * rate[(int) p[1]])));
            }
            out.append("</table>\n<p>dead: ").append(listed(v.dead())).append("; rare: ").append(listed(v.rare()))
                    .append("</p></details>\n");
        }
        return out.append("</section>\n").toString();
    }

    /** Up to {@value #LISTED} experts by name, then how many more. */
    private static String listed(List<Integer> experts) {
        if (experts.isEmpty()) {
            return "none";
        }
        String names = String.join(", ", experts.subList(0, Math.min(LISTED, experts.size())).stream()
                .map(e -> "e" + e).toList());
        return experts.size() > LISTED ? names + " and " + (experts.size() - LISTED) + " more" : names;
    }

    /** The largest between-file differences in selection rate; empty with one file. */
    private static String fileSection(CalibrationStats stats, int[] decoderLayers, List<String> fileNames) {
        if (fileNames.size() < 2) {
            return "";
        }
        StringBuilder out = new StringBuilder("<section><h2>Differences between files</h2><p>The (layer, expert) "
                + "selection rates that differ most between input files.</p>\n<table><tr><th>layer</th><th>expert</th>"
                + "<th>highest</th><th>lowest</th><th>difference</th></tr>\n");
        List<CalibrationSummary.Spread> spreads = CalibrationSummary.spreads(stats, decoderLayers, fileNames);
        for (CalibrationSummary.Spread d : spreads.subList(0, Math.min(10, spreads.size()))) {
            out.append(String.format(Locale.ROOT, "<tr><td>%d</td><td>e%d</td><td>%.4f %s</td><td>%.4f %s</td>"
                            + "<td>%.4f</td></tr>%n", d.decoderLayer(), d.expert(), d.highRate(), Svg.esc(d.highFile()),
                    d.lowRate(), Svg.esc(d.lowFile()), d.difference()));
        }
        return out.append("</table></section>\n").toString();
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
}
