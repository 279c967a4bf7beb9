package org.sparkmoe.bench;

import java.util.Arrays;
import java.util.EnumSet;
import java.util.Locale;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.train.LoraSpec;
import org.sparkmoe.train.LrSchedule;
import org.sparkmoe.train.TrainOptions;
import org.sparkmoe.train.TrainState;
import org.sparkmoe.train.TrainStep;

/**
 * Times one JVM's training step ({@link TrainStep#run}: forward, loss, backward, clipping, AdamW) on B random
 * windows of S tokens, beside the inference forward and the training forward alone on the same windows, and prints
 * the median milliseconds per call ({@link Stopwatch}, one warm-up), tokens per second, and the JVM's CPU
 * milliseconds per call (all threads; on a shared machine the wall time includes waiting for a core, CPU time not). LoRA on w1, w3, w2,
 * rank 8, α 16, router frozen.
 *
 * <p>Usage: {@code TrainStepBench MODEL_DIR [BATCH=8] [WINDOW=256] [REPEATS=5]}
 */
public final class TrainStepBench {
    private TrainStepBench() {
    }

    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: TrainStepBench MODEL_DIR [BATCH] [WINDOW] [REPEATS]");
            System.exit(2);
        }
        int batch = args.length > 1 ? Integer.parseInt(args[1]) : 8;
        int window = args.length > 2 ? Integer.parseInt(args[2]) : 256;
        int repeats = args.length > 3 ? Integer.parseInt(args[3]) : 5;
        MoeTransformer model = ModelFolder.load(new Path(args[0]), new Configuration());
        LoraSpec spec = new LoraSpec(EnumSet.allOf(Projection.class), 8, 16.0, false);
        TrainState state = TrainState.init(model, spec, 1, DataType.FLOAT);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-4, 0, 1000), 1);
        Random rnd = new Random(2);
        int[][] windows = new int[batch][window];
        for (int[] w : windows) {
            Arrays.setAll(w, i -> rnd.nextInt(model.config().vocab_size));
        }
        System.out.printf(Locale.ROOT, "model %s, %d windows × %d tokens, %d repeats (+1 warm-up)%n", args[0], batch,
                window, repeats);
        measure("inference forward", repeats, batch * window, () -> model.logits(windows));
        measure("training forward + loss", repeats, batch * window,
                () -> TrainStep.losses(model, state, windows, opts));
        measure("training step (fwd+bwd+AdamW)", repeats, batch * window,
                () -> TrainStep.run(model, state, windows, opts));
    }

    private static void measure(String what, int repeats, int tokens, Runnable work) {
        com.sun.management.OperatingSystemMXBean os = (com.sun.management.OperatingSystemMXBean)
                java.lang.management.ManagementFactory.getOperatingSystemMXBean();
        long cpu0 = os.getProcessCpuTime();
        double medianMs = Stopwatch.medianMs(1, repeats, work);
        double cpuMs = (os.getProcessCpuTime() - cpu0) / 1e6 / (repeats + 1);
        System.out.printf(Locale.ROOT, "%-32s median %8.1f ms  %8.0f tokens/s  cpu %8.1f ms/call%n", what, medianMs,
                tokens / (medianMs / 1000), cpuMs);
    }
}
