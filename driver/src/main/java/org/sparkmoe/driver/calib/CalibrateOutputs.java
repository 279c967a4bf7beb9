package org.sparkmoe.driver.calib;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExpertActivationStats;
import org.sparkmoe.calib.ImatrixFile;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsWriter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Everything a calibration run writes to its output folder, each file atomically through the Hadoop FileSystem API:
 * <pre>
 *   router-stats.json                   routing statistics, overall and per file
 *   report.html                         the self-contained report (inline SVG)
 *   expert-activations.safetensors      per-expert input and intermediate |x| statistics
 *   expert-scores.json                  per-expert routed tokens, frequency, REAP saliency and EAN, rare experts
 *   mumoe-experts.json                  with a μMoE adapter: its experts' gate mass and specialisation per file
 *   router-data/router-data.json        with an export: what the exported DataSet files hold
 * </pre>
 */
public final class CalibrateOutputs {
    public static final String STATS_FILE = "router-stats.json";
    public static final String REPORT_FILE = "report.html";
    public static final String ACTIVATIONS_FILE = "expert-activations.safetensors";
    public static final String EXPERT_SCORES_FILE = "expert-scores.json";

    private CalibrateOutputs() {
    }

    /**
     * Writes the outputs of {@code plan}'s run into {@code outUri} (created if missing), {@link ExpertScoresJson}
     * listing the experts below {@code minExpertTokens}.
     */
    public static void write(Configuration conf, String outUri, CalibratePlan plan, ModelConfig config,
                             CalibrationStats stats, int minExpertTokens) {
        List<String> names = plan.data().stream().map(d -> new Path(d).getName()).toList();
        int[] layers = CalibrationStats.moeLayerIndices(config);
        FileSystem fs = Paths.fileSystem(outUri, conf);
        Path dir = new Path(outUri);
        mkdirs(fs, dir);
        AtomicFile.write(fs, new Path(dir, STATS_FILE),
                RouterStatsJson.of(plan.model(), stats, names).getBytes(StandardCharsets.UTF_8));
        SafeTensorsWriter.write(fs, new Path(dir, ACTIVATIONS_FILE), activationTensors(stats, layers),
                Map.of("format", "sparkmoe-expert-activations", "all_experts", Boolean.toString(plan.allExperts())));
        if (plan.routerData() != null) {
            Path info = new Path(plan.routerData(), RouterDataInfo.FILE);
            AtomicFile.write(fs, info, RouterDataInfo.json(plan, config, layers).getBytes(StandardCharsets.UTF_8));
        }
        AtomicFile.write(fs, new Path(dir, EXPERT_SCORES_FILE),
                ExpertScoresJson.of(config, stats, minExpertTokens).getBytes(StandardCharsets.UTF_8));
        if (stats.gates() != null) {
            AtomicFile.write(fs, new Path(dir, MumoeExperts.FILE), new MumoeExperts(stats.gates(), names)
                    .json(plan.model(), plan.adapter()).getBytes(StandardCharsets.UTF_8));
        }
        Map<Integer, double[]> reap = new java.util.LinkedHashMap<>();          // decoder layer → REAP per expert
        for (int l = 0; l < layers.length; l++) {
            reap.put(layers[l], stats.saliency(l).reap());
        }
        AtomicFile.write(fs, new Path(dir, REPORT_FILE), CalibrationReport.html(plan.model(), plan.split().toString(),
                stats, layers, names, reap, minExpertTokens).getBytes(StandardCharsets.UTF_8));
    }

    /**
     * Writes the run's importance matrix to {@code uri} atomically, as llama.cpp's GGUF imatrix or (format "dat")
     * its legacy binary one: the data files as its datasets, the windows as its chunks of --window tokens.
     */
    public static void writeImatrix(Configuration conf, String uri, String format, CalibratePlan plan,
                                    ModelConfig config, CalibrateJob.Result result) {
        List<ImatrixFile.Entry> entries = ImatrixFile.entries(config, result.stats().importance());
        int chunks = Math.toIntExact(java.util.Arrays.stream(result.windowsPerFile()).sum());
        FileSystem fs = Paths.fileSystem(uri, conf);
        if (format.equals("dat")) {
            ImatrixFile.writeDat(fs, new Path(uri), entries, plan.data(), chunks, plan.window());
        } else {
            ImatrixFile.writeGguf(fs, new Path(uri), entries, plan.data(), chunks, plan.window());
        }
    }

    /** Per MoE layer N: layers.N.{input,intermediate}_abs_{mean,max} [E,D] / [E,I] and layers.N.tokens [E] (I64). */
    private static List<NamedTensor> activationTensors(CalibrationStats stats, int[] layers) {
        List<NamedTensor> tensors = new ArrayList<>();
        for (int l = 0; l < layers.length; l++) {
            ExpertActivationStats a = stats.activations(l);
            String prefix = "layers." + layers[l] + ".";
            tensors.add(new NamedTensor.Floats(prefix + "input_abs_mean", a.inputAbsMean()));
            tensors.add(new NamedTensor.Floats(prefix + "input_abs_max", a.inputAbsMax()));
            tensors.add(new NamedTensor.Floats(prefix + "intermediate_abs_mean", a.intermediateAbsMean()));
            tensors.add(new NamedTensor.Floats(prefix + "intermediate_abs_max", a.intermediateAbsMax()));
            long[] tokens = a.tokens();
            tensors.add(new NamedTensor.Longs(prefix + "tokens", new long[] {tokens.length}, tokens));
        }
        return tensors;
    }

    private static void mkdirs(FileSystem fs, Path dir) {
        try {
            if (fs.exists(dir) && !fs.getFileStatus(dir).isDirectory()) {
                throw new IllegalArgumentException("--out " + dir + " exists and is not a folder");
            }
            fs.mkdirs(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("creating " + dir + ": " + e.getMessage(), e);
        }
    }
}
