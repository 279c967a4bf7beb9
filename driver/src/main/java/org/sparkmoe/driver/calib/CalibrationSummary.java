package org.sparkmoe.driver.calib;

import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.LayerRouterStats;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/** The headline numbers of a calibration, shared by the console summary and the HTML report. */
public final class CalibrationSummary {
    /** One MoE layer: decoder index, load imbalance, mean routing entropy, least-used and never-selected experts. */
    public record Layer(int decoderLayer, double maxOverMean, double entropyPerToken, int leastUsed,
                        double leastUsedRate, List<Integer> neverSelected) {
    }

    /** An expert whose selection rate differs between files: highest and lowest file and their rates. */
    public record Spread(int decoderLayer, int expert, String highFile, double highRate, String lowFile,
                         double lowRate) {
        public double difference() {
            return highRate - lowRate;
        }
    }

    private CalibrationSummary() {
    }

    public static List<Layer> layers(CalibrationStats stats, int[] decoderLayers) {
        List<Layer> out = new ArrayList<>();
        for (int l = 0; l < stats.moeLayers(); l++) {
            LayerRouterStats s = stats.layer(l);
            long[] count = s.count();
            int least = 0;
            List<Integer> never = new ArrayList<>();
            for (int e = 0; e < count.length; e++) {
                if (count[e] < count[least]) {
                    least = e;
                }
                if (count[e] == 0) {
                    never.add(e);
                }
            }
            out.add(new Layer(decoderLayers[l], s.maxOverMeanLoad(), s.entropySum() / s.tokens(), least,
                    s.selectionRate()[least], never));
        }
        return out;
    }

    /** Every (layer, expert) with its largest between-file rate difference, largest first. */
    public static List<Spread> spreads(CalibrationStats stats, int[] decoderLayers, List<String> fileNames) {
        List<Spread> out = new ArrayList<>();
        for (int l = 0; l < stats.moeLayers(); l++) {
            for (int e = 0; e < stats.layer(l).experts(); e++) {
                int high = 0;
                int low = 0;
                for (int f = 1; f < stats.files(); f++) {
                    if (rate(stats, f, l, e) > rate(stats, high, l, e)) {
                        high = f;
                    }
                    if (rate(stats, f, l, e) < rate(stats, low, l, e)) {
                        low = f;
                    }
                }
                out.add(new Spread(decoderLayers[l], e, fileNames.get(high), rate(stats, high, l, e),
                        fileNames.get(low), rate(stats, low, l, e)));
            }
        }
        out.sort(Comparator.comparingDouble(Spread::difference).reversed());
        return out;
    }

    static double rate(CalibrationStats stats, int file, int l, int e) {
        return stats.file(file, l).selectionRate()[e];
    }

    /** The console text: one line per layer, then the five largest between-file differences. */
    public static String text(CalibrationStats stats, int[] decoderLayers, List<String> fileNames) {
        StringBuilder out = new StringBuilder();
        for (Layer layer : layers(stats, decoderLayers)) {
            out.append(String.format("layer %-3d max/mean load %.3f   entropy/token %.4f nats   least used expert %d "
                            + "(rate %.4f)   never selected: %s%n", layer.decoderLayer(), layer.maxOverMean(),
                    layer.entropyPerToken(), layer.leastUsed(), layer.leastUsedRate(),
                    layer.neverSelected().isEmpty() ? "none" : layer.neverSelected()));
        }
        if (fileNames.size() > 1) {
            out.append("largest differences in selection rate between files:\n");
            for (Spread s : spreads(stats, decoderLayers, fileNames).subList(0, Math.min(5,
                    stats.moeLayers() * stats.layer(0).experts()))) {
                out.append(String.format("  layer %d expert %d: %.4f in %s vs %.4f in %s (difference %.4f)%n",
                        s.decoderLayer(), s.expert(), s.highRate(), s.highFile(), s.lowRate(), s.lowFile(),
                        s.difference()));
            }
        }
        return out.toString();
    }
}
