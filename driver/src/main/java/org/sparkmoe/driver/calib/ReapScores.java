package org.sparkmoe.driver.calib;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.text.TextFiles;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The per-expert REAP scores the report shows when calibrate wrote them: {@code OUT/expert-scores.json}, {@code
 * {"layers": [{"layer": L, "experts": E, "reap": [E numbers], ...}]}}, L the decoder layer. Optional: without the
 * file, or without "reap", the report leaves the REAP column out.
 */
public final class ReapScores {
    public static final String FILE = "expert-scores.json";

    private ReapScores() {
    }

    /** Decoder layer → REAP score per expert [E], in layer order; empty when {@code dir} has no such scores. */
    public static Map<Integer, double[]> read(Configuration conf, String dir) {
        Path file = new Path(dir, FILE);
        FileSystem fs = Paths.fileSystem(file.toString(), conf);
        try {
            if (!fs.exists(file)) {
                return Map.of();
            }
            return parse(new ObjectMapper().readTree(TextFiles.readUtf8(file, conf)), file.toString());
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + file + ": " + e.getMessage(), e);
        }
    }

    static Map<Integer, double[]> parse(JsonNode root, String source) {
        Map<Integer, double[]> out = new LinkedHashMap<>();
        JsonNode layers = root.path("layers");
        for (JsonNode layer : layers) {
            JsonNode reap = layer.get("reap");
            if (reap == null || !reap.isArray() || !layer.path("layer").isInt()) {
                continue;
            }
            double[] scores = new double[reap.size()];
            for (int e = 0; e < scores.length; e++) {
                if (!reap.get(e).isNumber()) {
                    throw new IllegalArgumentException(source + ": layer " + layer.get("layer") + " reap[" + e
                            + "] is " + reap.get(e) + ", expected a number");
                }
                scores[e] = reap.get(e).asDouble();
            }
            out.put(layer.get("layer").asInt(), scores);
        }
        return out;
    }
}
