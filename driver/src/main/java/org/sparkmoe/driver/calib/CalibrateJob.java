package org.sparkmoe.driver.calib;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.adapter.MumoeAdapter;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.calib.MumoeGateStats;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.RouterDataFiles;
import org.sparkmoe.driver.layerwise.AttendedChunk;
import org.sparkmoe.driver.layerwise.HiddenChunk;
import org.sparkmoe.driver.layerwise.LayerwisePass;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.LayerCache;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.IntStream;

/**
 * Distributed calibration. Stage 1 tokenizes each file's split (one task per file) and keeps its first windows;
 * stage 2 forwards fixed chunks of windows spread over the partitions (each executor JVM loads the model once),
 * adds each chunk's router logits and router inputs to an exact {@link CalibrationStats} and, when asked,
 * writes the chunk's router training files (with a μMoE adapter, also every term's gate mass per file);
 * {@code treeAggregate} merges the partial statistics, its last merge on
 * an executor so that the driver fetches a single aggregate. The
 * statistics are exact sums, so they are identical for any partitioning or number of executors.
 */
public final class CalibrateJob {
    private static final String NON_FINITE_HINT = "expected finite numbers (does it hold NaN or infinite weights?); "
            + "no report written";

    private CalibrateJob() {
    }

    /** The statistics and the windows used per file. */
    public record Result(CalibrationStats stats, long[] windowsPerFile) {
    }

    public static Result run(JavaSparkContext sc, CalibratePlan plan, ModelConfig config) {
        return run(sc, plan, config, false);
    }

    /**
     * @param importance also every linear layer's importance sums ({@code --imatrix}), merged in the same
     *                   treeAggregate as the other statistics
     */
    public static Result run(JavaSparkContext sc, CalibratePlan plan, ModelConfig config, boolean importance) {
        JavaRDD<CalibChunk> chunks = tokenized(sc, plan);
        long[] windows = windows(plan, chunks);
        if (plan.routerData() != null) {
            prepareRouterData(plan, config);
        }
        long total = Arrays.stream(windows).sum();
        sc.setJobDescription("calibrate: forward " + total + " windows of " + plan.window() + " tokens in chunks of "
                + plan.batchWindows() + " on " + plan.partitions() + " partitions"
                + (plan.routerData() != null ? ", exporting router data" : "")
                + (importance ? ", with the importance sums of every linear layer" : ""));
        CalibrationStats zero = CalibrationStats.empty(plan.data().size(), config, plan.topK(), importance,
                gateStats(plan, config));
        // the last merge runs on an executor, so the driver fetches one aggregate (spark.driver.maxResultSize), not √P
        CalibrationStats stats = chunks.repartition(plan.partitions())
                .treeAggregate(zero, (acc, chunk) -> add(plan, acc, chunk), CalibrationStats::merge, 2, true);
        chunks.unpersist(false);
        return new Result(stats, windows);
    }

    /**
     * As {@link #run}, as a layer-sequential pass ({@link LayerwisePass}): after each MoE layer's attention half, a
     * treeAggregate over the chunks adds that layer's statistics from what its block reads
     * ({@link CalibrationStats#addLayer}) and, when asked, writes its router training files; the driver merges the
     * layers' aggregates (exact sums, so the bits of {@link #run}, and the same files). With {@code importance}, the
     * pass also gathers every layer's attention and dense-MLP inputs, so it runs every layer; without, the layers
     * after the last MoE layer are not run.
     */
    public static Result runLayerwise(JavaSparkContext sc, CalibratePlan plan, ModelConfig config,
                                      LayerwisePlan pass, boolean importance) {
        if (plan.adapter() != null) {
            throw new IllegalArgumentException("--layerwise runs the plain model: drop --adapter, or --layerwise");
        }
        JavaRDD<CalibChunk> chunks = tokenized(sc, plan);
        long[] windows = windows(plan, chunks);
        if (plan.routerData() != null) {
            prepareRouterData(plan, config);
        }
        int[] moeLayers = CalibrationStats.moeLayerIndices(config);
        boolean sigmoid = sigmoid(config);
        CalibrationStats stats = CalibrationStats.empty(plan.data().size(), config, plan.topK(), importance);
        JavaRDD<HiddenChunk> last = LayerwisePass.run(sc, "calibrate",
                new LayerwisePass.Model(plan.model(), plan.device(), plan.topK()), pass, config,
                importance ? config.num_hidden_layers : moeLayers[moeLayers.length - 1] + 1,
                chunks.repartition(plan.partitions()).map(c -> HiddenChunk.of(c.file, c.firstWindow, c.windows)),
                (layer, attended) -> {
                    int l = Arrays.binarySearch(moeLayers, layer);
                    sc.setJobDescription("calibrate --layerwise: statistics of layer " + layer
                            + (plan.routerData() != null ? ", exporting its router data" : ""));
                    stats.merge(attended.treeAggregate(
                            CalibrationStats.empty(plan.data().size(), config, plan.topK(), importance),
                            (acc, c) -> addLayer(plan, acc, layer, l, sigmoid, c), CalibrationStats::merge, 2, true));
                }, stats.importance()).last();
        last.unpersist(false);
        chunks.unpersist(false);
        return new Result(stats, windows);
    }

    /**
     * MoE layer {@code layer} (the {@code l}-th) of one attended chunk: its statistics and, when asked, its router
     * training files ({@code sigmoid}: the router scores with a sigmoid, not a softmax).
     */
    private static CalibrationStats addLayer(CalibratePlan plan, CalibrationStats acc, int layer, int l,
                                             boolean sigmoid, AttendedChunk chunk) {
        try (LayerCache.Lease<LayerCache.Layer> lease = LayerCache.layer(plan.model(), plan.device(), layer)) {
            INDArray input = chunk.normed();                                                 // [B·S, D]
            MoeBlock block = lease.get().decoder().moe();
            INDArray logits = block.router().logits(input);                                  // [B·S, E]
            requireFinite(plan, chunk.chunk().file(), layer, logits);
            acc.addLayer(chunk.chunk().file(), l, layer, input, logits, block, null, plan.allExperts());
            if (plan.routerData() != null) {
                exportLayer(plan, chunk.chunk().file(), chunk.chunk().chunk(), chunk.chunk().windows().length, layer,
                        input, logits, sigmoid);
            }
            return acc;
        }
    }

    /** The chunks of every file's split, persisted (one task per file tokenizes it). */
    private static JavaRDD<CalibChunk> tokenized(JavaSparkContext sc, CalibratePlan plan) {
        List<Integer> fileIndices = IntStream.range(0, plan.data().size()).boxed().toList();
        sc.setJobDescription("calibrate: tokenize " + plan.data().size() + " files (" + plan.split() + " split)");
        return sc.parallelize(fileIndices, fileIndices.size())
                .flatMap(file -> chunks(plan, file).iterator())
                .persist(StorageLevel.MEMORY_AND_DISK_SER());
    }

    /** The windows used per file; refuses a file whose split holds no window. */
    private static long[] windows(CalibratePlan plan, JavaRDD<CalibChunk> chunks) {
        long[] windows = new long[plan.data().size()];
        for (int[] fileAndWindows : chunks.map(c -> new int[] {c.file, c.windows.length}).collect()) {
            windows[fileAndWindows[0]] += fileAndWindows[1];
        }
        for (int f = 0; f < windows.length; f++) {
            if (windows[f] == 0) {
                throw new IllegalArgumentException(plan.data().get(f) + ": the " + plan.split() + " split"
                        + (plan.maxTokensPerFile() > 0 ? " (first " + plan.maxTokensPerFile() + " tokens)" : "")
                        + " holds fewer tokens than one window of " + plan.window());
            }
        }
        return windows;
    }

    /**
     * With a μMoE adapter, the empty gate mass of its sites (per file, every term's gates as the forward computes
     * them); null otherwise.
     */
    static MumoeGateStats gateStats(CalibratePlan plan, ModelConfig config) {
        if (plan.adapter() == null || !MumoeAdapter.isMumoe(new Path(plan.adapter()), new Configuration())) {
            return null;
        }
        MumoeConfig adapter = MumoeAdapter.readConfig(new Path(plan.adapter()), new Configuration());
        return new MumoeGateStats(plan.data().size(),
                adapter.placements(config).stream().map(MumoeConfig.Placement::key).toList(), adapter.experts());
    }

    private static List<CalibChunk> chunks(CalibratePlan plan, int file) {
        String text = TextFiles.readUtf8(new Path(plan.data().get(file)), new Configuration());
        int[] tokens = Tokenizers.cached(plan.model()).encode(plan.split().apply(text));
        int[][] all = Windows.cut(tokens, plan.window());
        int used = plan.windowsOf(tokens.length);
        List<CalibChunk> out = new ArrayList<>();
        for (int start = 0; start < used; start += plan.batchWindows()) {
            out.add(new CalibChunk(file, start, Arrays.copyOfRange(all, start, Math.min(used, start + plan.batchWindows()))));
        }
        return out;
    }

    /**
     * One chunk's statistics, each MoE layer added while its step of the forward lasts
     * ({@link MoeTransformer#moeLayerPass}: no layer's activations outlive it, no logits computed), and, when asked,
     * its router training files.
     */
    private static CalibrationStats add(CalibratePlan plan, CalibrationStats acc, CalibChunk chunk) {
        try (ModelCache.Lease lease = ModelCache.lease(plan.model(), plan.adapter(), null, plan.device())) {
            MoeTransformer model = lease.model();
            boolean sigmoid = sigmoid(model.config());
            model.moeLayerPass(chunk.windows, plan.topK(), acc.linearInputs(chunk.file),
                    (l, layer, block, input, logits, routed, output) -> {
                        requireFinite(plan, chunk.file, layer, logits);
                        if (!finite(output)) {       // NaN weights in its experts: refused before their statistics
                            throw new IllegalArgumentException("model " + plan.model() + " gives a non-finite output "
                                    + "in decoder layer " + layer + " on " + fileName(plan, chunk.file) + "; "
                                    + NON_FINITE_HINT);
                        }
                        acc.addLayer(chunk.file, l, layer, input, logits, block, routed, plan.allExperts());
                        if (plan.routerData() != null) {
                            exportLayer(plan, chunk.file, chunk.firstWindow, chunk.windows.length, layer, input,
                                    logits, sigmoid);
                        }
                    });
        }
        return acc;
    }

    /** Refuses router logits [B·S, E] of MoE decoder layer {@code layer} that hold a NaN or an infinity. */
    private static void requireFinite(CalibratePlan plan, int file, int layer, INDArray logits) {
        if (!finite(logits)) {
            throw new IllegalArgumentException("model " + plan.model() + " gives non-finite router logits in MoE "
                    + "layer " + layer + " on " + fileName(plan, file) + "; " + NON_FINITE_HINT);
        }
    }

    /** Whether every element is finite (NaN and ±Inf propagate into the sum). */
    private static boolean finite(INDArray a) {
        return Double.isFinite(a.sumNumber().doubleValue());
    }

    private static String fileName(CalibratePlan plan, int file) {
        return new Path(plan.data().get(file)).getName();
    }

    /**
     * MoE decoder layer {@code layer}'s DataSet files of {@code windows} windows of input file {@code file} from
     * window {@code firstWindow}, one per window: features = router inputs [S, D], labels = the router's scores
     * [S, E] (softmax, or sigmoid for a sigmoid router).
     *
     * @param inputs [B·S, D] the router's inputs
     * @param logits [B·S, E] its logits
     */
    private static void exportLayer(CalibratePlan plan, int file, int firstWindow, int windows, int layer,
                                    INDArray inputs, INDArray logits, boolean sigmoid) {
        Path root = new Path(plan.routerData());
        FileSystem fs = fileSystem(root);
        int s = plan.window();
        INDArray teacher = RouterDataFiles.teacher(logits, sigmoid);    // [B·S, E]
        for (int w = 0; w < windows; w++) {
            Path target = new Path(RouterDataFiles.layerDir(root, layer), RouterDataFiles.fileName(file, firstWindow + w));
            RouterDataFiles.write(fs, target,
                    inputs.get(NDArrayIndex.interval((long) w * s, (long) (w + 1) * s), NDArrayIndex.all()),
                    teacher.get(NDArrayIndex.interval((long) w * s, (long) (w + 1) * s), NDArrayIndex.all()));
        }
    }

    /** Whether the model's routers score with a sigmoid (the teacher labels' form). */
    private static boolean sigmoid(ModelConfig config) {
        return config.routing.scoring_func().equals("sigmoid");
    }

    /** Replaces any earlier export (stale files would mix into training) and creates the layer folders. */
    private static void prepareRouterData(CalibratePlan plan, ModelConfig config) {
        Path root = new Path(plan.routerData());
        FileSystem fs = fileSystem(root);
        try {
            if (fs.exists(root) && !fs.delete(root, true)) {
                throw new IOException("could not delete the earlier export " + root);
            }
            for (int layer : CalibrationStats.moeLayerIndices(config)) {
                fs.mkdirs(RouterDataFiles.layerDir(root, layer));
            }
        } catch (IOException e) {
            throw new UncheckedIOException("preparing " + root + ": " + e.getMessage(), e);
        }
    }

    private static FileSystem fileSystem(Path path) {
        try {
            return path.getFileSystem(new Configuration());
        } catch (IOException e) {
            throw new UncheckedIOException("opening the file system of " + path + ": " + e.getMessage(), e);
        }
    }
}
