package org.sparkmoe.driver.demo;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.calib.CalibrateJob;
import org.sparkmoe.driver.calib.CalibrateOutputs;
import org.sparkmoe.driver.calib.CalibratePlan;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.PerplexityReport;
import org.sparkmoe.driver.surgery.SurgeryOptions;
import org.sparkmoe.driver.surgery.TopKCommand;
import org.sparkmoe.driver.train.TrainJob;
import org.sparkmoe.driver.train.TrainOutputs;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.TopKRescale;
import org.sparkmoe.train.TrainState;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;

/**
 * The demo's six stages, one after another on one SparkContext, each through its job's public API: calibrate, eval
 * of the model, LoRA training, eval with the adapter, topk surgery with the measured rescale, eval of the new
 * checkpoint. Progress goes to {@code progress}; every output is written as its stage ends.
 */
final class DemoPipeline {
    static final int STAGES = 6;

    private final JavaSparkContext sc;
    private final DemoPlan plan;
    private final Configuration conf;
    private final PrintStream progress;
    private final int partitions;
    private final Map<String, Double> seconds = new LinkedHashMap<>();
    private final Map<String, String> outputs = new LinkedHashMap<>();
    private int stage;

    DemoPipeline(JavaSparkContext sc, DemoPlan plan, Configuration conf, PrintStream progress, int partitions) {
        this.sc = sc;
        this.plan = plan;
        this.conf = conf;
        this.progress = progress;
        this.partitions = partitions;
    }

    /** Runs every stage; the seconds of each and the outputs written (label → URI) are in the result. */
    DemoResult run() {
        calibrate();
        int topK = plan.config().num_experts_per_tok;
        PerplexityReport base = eval("eval base", "base", "the model", plan.model(), null, topK);
        train();
        PerplexityReport lora = eval("eval LoRA", "lora", "the model with " + plan.adapter(), plan.model(),
                plan.adapter(), topK);
        double[] alpha = surgery();
        String variant = "topk" + plan.surgeryTopK();
        PerplexityReport surgery = eval("eval topk", variant, plan.surgery(), plan.surgery(), null, plan.surgeryTopK());
        return new DemoResult(base, lora, surgery, alpha, seconds, outputs);
    }

    private void calibrate() {
        CalibratePlan calibrate = plan.calibratePlan(partitions);
        stage("calibrate", String.format(Locale.ROOT, "router statistics over the first %d tokens of each file's "
                + "valid split", calibrate.maxTokensPerFile()), () -> {
            CalibrateJob.Result result = CalibrateJob.run(sc, calibrate, plan.config());
            CalibrateOutputs.write(conf, plan.calibration(), calibrate, plan.config(), result.stats(), 0);
            progress.printf("demo: calibrated on %d tokens%n", result.stats().layer(0).tokens());
            return null;
        });
        outputs.put("calibration statistics", file(plan.calibration(), CalibrateOutputs.STATS_FILE));
        outputs.put("calibration report", file(plan.calibration(), CalibrateOutputs.REPORT_FILE));
        outputs.put("expert activations", file(plan.calibration(), CalibrateOutputs.ACTIVATIONS_FILE));
    }

    private void train() {
        TrainPlan base = plan.trainPlan(partitions);
        TrainState start = TrainJob.initialState(base, conf);
        TrainPlan train = base.withOptions(base.options().withPassWorkspace(passWorkspace(base, start)));
        stage("train", String.format(Locale.ROOT, "LoRA (rank %d, alpha %s, lr %s) on the valid split of %s, %d steps "
                        + "of %d windows per partition on %d partitions", train.loraSpec().rank(),
                fmt(train.loraSpec().alpha()), fmt(train.options().schedule().peak()),
                new Path(plan.trainFile()).getName(), train.steps(), train.batchWindows(),
                train.partitions()), () -> {
            TrainOutputs out = new TrainOutputs(train, conf);
            TrainState last = TrainJob.run(sc, train, start, 0, (round, averaged) -> {
                progress.println(round.summary(train.roundCount(), train.steps()));
                out.roundDone(round, averaged);
            });
            out.finish(plan.config(), last, ExpertLayout.PER_EXPERT, train.baseModelName());
            return null;
        });
        outputs.put("train log", file(plan.lora(), TrainOutputs.LOG));
        outputs.put("LoRA adapter", plan.adapter());
    }

    /**
     * Whether the steps run in the task threads' pass workspace: as the train command, by train's memory plan. Tasks
     * of local rounds free it when they end, before the later stages run.
     */
    private boolean passWorkspace(TrainPlan train, TrainState start) {
        return MemoryPlan.of(MemoryPlan.Job.TRAIN, plan.config(), MemoryPlan.mappedBytes(plan.model(), conf),
                train.batchWindows(), train.window(), start.bytes(), false,
                SparkLimits.of(sc.getConf(), partitions)).passWorkspace();
    }

    /** @return the w2 scale α of each MoE layer */
    private double[] surgery() {
        String stats = file(plan.calibration(), CalibrateOutputs.STATS_FILE);
        TopKRescale.Method rescale = DemoPlan.rescale(plan.config());
        List<LayerResult> layers = stage("surgery", "topk --top-k " + plan.surgeryTopK() + " --rescale "
                + rescale.name().toLowerCase() + " --stats " + stats,
                () -> TopKCommand.run(sc, SurgeryOptions.of(plan.model(), plan.surgery(), stats, partitions),
                plan.surgeryTopK(), rescale));
        outputs.put("surgery checkpoint", plan.surgery());
        return layers.stream().mapToDouble(l -> l.metrics().get("alpha")).toArray();
    }

    private PerplexityReport eval(String name, String variant, String what, String model, String adapter, int topK) {
        PerplexityReport report = stage(name, what + ", test split of " + plan.data().size() + " files", () -> {
            PerplexityReport r = EvalJob.run(sc, plan.evalPlan(model, adapter, topK, partitions));
            String target = plan.evalReport(variant);
            AtomicFile.write(Paths.fileSystem(target, conf), new Path(target),
                    r.toJson().getBytes(StandardCharsets.UTF_8));
            progress.printf(Locale.ROOT, "demo: %d scored tokens, perplexity %.4f%n", r.all().tokens(),
                    r.all().perplexity());
            return r;
        });
        outputs.put(name + " report", plan.evalReport(variant));
        return report;
    }

    private <T> T stage(String name, String what, Supplier<T> body) {
        stage++;
        progress.printf("demo [%d/%d] %s: %s%n", stage, STAGES, name, what);
        long start = System.nanoTime();
        T result = body.get();
        double s = (System.nanoTime() - start) / 1e9;
        seconds.put(name, s);
        progress.printf(Locale.ROOT, "demo [%d/%d] %s done in %.1f s%n", stage, STAGES, name, s);
        return result;
    }

    private static String file(String dir, String name) {
        return new Path(dir, name).toString();
    }

    /** 32 for 32.0, 0.003 for 3e-3. */
    static String fmt(double x) {
        return x == Math.rint(x) ? Long.toString((long) x) : Double.toString(x);
    }
}
