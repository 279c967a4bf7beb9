package org.sparkmoe.driver.surgery;

import org.sparkmoe.io.FusedExperts;
import com.esotericsoftware.kryo.Kryo;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.data.TokenizeStage;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LowRankDistillation;
import org.sparkmoe.text.Windows;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * The distillation of {@code surgery lowrank --distill-steps}, on Spark. Stage 1 tokenizes each calibration file
 * (one task per file) and forwards fixed chunks of its first windows through the original model, spread over the
 * partitions; each chunk returns every MoE layer's input hidden states. The driver orders the chunks by (file,
 * window) and broadcasts X_l [T, D] per layer. Stage 2 is expert-parallel: one task per MoE layer opens
 * the original checkpoint on its executor, computes the original layer's outputs on X_l and trains that layer's
 * LoRA experts ({@link LowRankDistillation}). The LoRA experts of one layer cannot be split further: every token's
 * output mixes the weights of its K experts before the SwiGLU nonlinearity, so their gradients are coupled. Chunks
 * depend only on the file and the chunk size, and every layer's work only on its inputs, so any partition count
 * gives the same bytes.
 */
final class DistillJob {
    private DistillJob() {
    }

    /** Up to B consecutive windows of one file, starting at window {@code firstWindow}. */
    static final class Chunk {
        int file;
        int firstWindow;
        int[][] windows; // [B, S]

        Chunk() {
        }

        Chunk(int file, int firstWindow, int[][] windows) {
            this.file = file;
            this.firstWindow = firstWindow;
            this.windows = windows;
        }
    }

    /** A chunk's MoE-layer inputs: {@code inputs[i]} is MoE layer i's [B·S, D] in 'c' order. */
    static final class Capture {
        int file;
        int firstWindow;
        float[][] inputs;

        Capture() {
        }
    }

    /** One layer's distillation work (its low-rank result and inputs travel as broadcasts). */
    static final class Work {
        int layer;
        int moeLayer;
        int tokens;

        Work() {
        }
    }

    /**
     * @param lowRank one low-rank result per MoE layer, in order
     * @return the distilled results, in MoE layer order
     */
    static List<LayerResult> run(JavaSparkContext sc, String modelUri, int[] moeLayers, List<LayerResult> lowRank,
            DistillPlan plan, int partitions) {
        TokenizeStage.Tokenized tokenized = TokenizeStage.run(sc, "surgery lowrank distill", modelUri, plan.data(),
                plan.split(), plan.window());
        long windows = tokenized.tokenCounts().stream().mapToLong(plan::windowsOf).sum();
        Device device = plan.device();
        checkCaptureFits(sc, plan, windows, moeLayers.length, hiddenSize(modelUri));
        sc.setJobDescription("surgery lowrank distill: forward " + windows + " windows of " + plan.window()
                + " tokens through the original model");
        List<Capture> captures = new ArrayList<>(tokenized.files()
                .flatMap(f -> chunks(plan, f).iterator())
                .repartition(partitions)
                .map(c -> capture(modelUri, device, c))
                .collect());
        tokenized.files().unpersist(false);
        captures.sort(Comparator.<Capture>comparingInt(c -> c.file).thenComparingInt(c -> c.firstWindow));

        List<Work> work = new ArrayList<>();
        // per MoE layer, so that a task fetches only its own: X_l [T, D] and the low-rank result
        List<Broadcast<float[]>> inputs = new ArrayList<>();
        List<Broadcast<SurgeryPiece>> starts = new ArrayList<>();
        for (int i = 0; i < moeLayers.length; i++) {
            Work w = new Work();
            w.layer = moeLayers[i];
            w.moeLayer = i;
            w.tokens = (int) (windows * plan.window());
            work.add(w);
            inputs.add(sc.broadcast(concatenate(captures, i)));
            starts.add(sc.broadcast(SurgeryPiece.of(i, 0, lowRank.get(i))));
        }
        sc.setJobDescription("surgery lowrank distill: " + plan.options().steps() + " steps per layer on "
                + windows * plan.window() + " tokens, one task per MoE layer");
        List<SurgeryPiece> pieces = new ArrayList<>(sc.parallelize(work, work.size())
                .map(w -> distill(modelUri, plan, w, starts.get(w.moeLayer).value().result(),
                        inputs.get(w.moeLayer).value()))
                .collect());
        inputs.forEach(Broadcast::destroy);
        starts.forEach(Broadcast::destroy);
        pieces.sort(Comparator.comparingInt(p -> p.layer));
        return pieces.stream().map(SurgeryPiece::result).toList();
    }

    private static long hiddenSize(String modelUri) {
        return ModelFolder.readConfig(new Path(modelUri), new Configuration()).hidden_size;
    }

    /**
     * The captured inputs travel through Kryo (one chunk's, all MoE layers: [L, B·S, D] floats), are collected on
     * the driver (every layer's [T, D]) and are broadcast as one float[] per layer: refuses, before the forward pass,
     * sizes that Spark's settings or a Java array cannot hold.
     */
    private static void checkCaptureFits(JavaSparkContext sc, DistillPlan plan, long windows, int moeLayers, long d) {
        long perLayer = windows * plan.window() * d;                                               // floats
        long perChunk = (long) moeLayers * plan.batchWindows() * plan.window() * d * Float.BYTES;
        long collected = moeLayers * perLayer * Float.BYTES;
        long kryoMax = sc.getConf().getSizeAsBytes("spark.kryoserializer.buffer.max", "64m");
        long resultMax = sc.getConf().getSizeAsBytes("spark.driver.maxResultSize", "1g");
        String hint = " (" + windows + " windows of " + plan.window() + " tokens, " + moeLayers + " MoE layers, hidden "
                + d + "): lower --distill-tokens or --window";
        if (perLayer > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("distillation inputs of one layer exceed a Java array, " + perLayer
                    + " floats" + hint);
        }
        if (perChunk > kryoMax) {
            throw new IllegalArgumentException("one chunk of captured inputs, " + perChunk + " bytes, exceeds "
                    + "spark.kryoserializer.buffer.max (" + kryoMax + " bytes)" + hint);
        }
        if (resultMax > 0 && collected > resultMax) {
            throw new IllegalArgumentException("the captured inputs, " + collected + " bytes, exceed "
                    + "spark.driver.maxResultSize (" + resultMax + " bytes)" + hint);
        }
    }

    private static List<Chunk> chunks(DistillPlan plan, TokenizedFile f) {
        int[][] all = Windows.cut(f.tokens, plan.window());
        int used = plan.windowsOf(f.tokens.length);
        List<Chunk> out = new ArrayList<>();
        for (int start = 0; start < used; start += plan.batchWindows()) {
            out.add(new Chunk(f.file, start, Arrays.copyOfRange(all, start, Math.min(used, start + plan.batchWindows()))));
        }
        return out;
    }

    private static Capture capture(String modelUri, Device device, Chunk chunk) {
        try (ModelCache.Lease lease = ModelCache.lease(modelUri, device)) {
            MoeTransformer model = lease.model();
            ForwardOutput out = model.forward(chunk.windows, model.config().num_experts_per_tok, true);
            Capture c = new Capture();
            c.file = chunk.file;
            c.firstWindow = chunk.firstWindow;
            c.inputs = new float[out.routerInputs().size()][];
            for (int i = 0; i < c.inputs.length; i++) {
                c.inputs[i] = out.routerInputs().get(i).dup('c').data().asFloat();               // [B·S, D]
            }
            return c;
        }
    }

    /** MoE layer i's inputs of every chunk, in chunk order: [T, D] flattened. */
    private static float[] concatenate(List<Capture> captures, int i) {
        int length = captures.stream().mapToInt(c -> c.inputs[i].length).sum();
        float[] x = new float[length];
        int at = 0;
        for (Capture c : captures) {
            System.arraycopy(c.inputs[i], 0, x, at, c.inputs[i].length);
            at += c.inputs[i].length;
        }
        return x;
    }

    /**
     * @param lowRank the layer's low-rank result
     * @param x       [T, D] the layer's calibration inputs, 'c' order
     */
    private static SurgeryPiece distill(String modelUri, DistillPlan plan, Work w, LayerResult lowRank, float[] x) {
        Configuration conf = new Configuration();
        ModelConfig config = ModelFolder.readConfig(new Path(modelUri), conf);
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            LayerResult r = LowRankDistillation.distill(FusedExperts.perExpert(checkpoint, config), config, w.layer,
                    lowRank, Nd4j.create(x, new long[] {w.tokens, config.hidden_size}, 'c'), plan.options());
            return SurgeryPiece.of(w.moeLayer, 0, r);
        }
    }

    static void registerClasses(Kryo kryo) {
        kryo.register(Chunk.class);
        kryo.register(Capture.class);
        kryo.register(Work.class);
    }
}
