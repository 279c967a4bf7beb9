package org.sparkmoe.driver.surgery;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import com.esotericsoftware.kryo.Kryo;
import org.apache.spark.api.java.JavaFutureAction;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.driver.data.TokenizeStage;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.driver.layerwise.AttendedChunk;
import org.sparkmoe.driver.layerwise.HiddenChunk;
import org.sparkmoe.driver.layerwise.LayerwisePass;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LowRankDistillation;
import org.sparkmoe.text.Windows;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.concurrent.ExecutionException;

/**
 * The distillation of {@code surgery lowrank --distill-steps}, on Spark, as a layer-sequential pass
 * ({@link LayerwisePass}) of the original model over the calibration windows. One task per file tokenizes it; its
 * first windows are cut into fixed chunks spread over the partitions, and the pass runs them up to the last MoE layer.
 * At MoE layer l the pass's hook copies the chunks' MoE block inputs norm2(h) into an RDD of their own (persisted:
 * the pass releases its RDDs as it goes on) and starts the layer's training as an asynchronous job of one task, so
 * layers train while the pass runs the next ones: the task reads every chunk's rows where they are persisted (the RDD
 * coalesced to one partition), puts them at their (file, window) place in X_l [T, D] — an ND4J array, off the heap —
 * opens the original checkpoint, computes the original layer's outputs on X_l and trains that layer's factors (the svd
 * form's LoRA experts, the cp form's CP factors, the tr form's TR cores: {@link LowRankDistillation}) from the layer's low-rank result, which
 * the driver staged beside the surgery's pieces; it stages the trained factors there too (a layer's can outgrow a task result) and returns names and numbers,
 * and the driver maps them. The factors of one layer cannot be split further: every token's output mixes the
 * weights of its K experts before the SwiGLU nonlinearity, so their gradients are coupled. X_l holds the whole-model forward's MoE inputs bit for bit (the pass runs every chunk
 * through the same operations) in the same place for any partition count, so any partitioning gives the same bytes;
 * nothing on the driver grows with T.
 */
final class DistillJob {
    private DistillJob() {
    }

    /**
     * @param lowRank one low-rank result per MoE layer, in order
     * @param staging where the trainings stage their factors (every executor can write it, the driver read it)
     * @return the distilled results, in MoE layer order
     */
    static List<LayerResult> run(JavaSparkContext sc, String modelUri, ModelConfig config, int[] moeLayers,
            List<LayerResult> lowRank, DistillPlan plan, int partitions, Path staging) {
        Path starts = new Path(staging, "distill-start");   // beside the surgery's pieces, which the driver has mapped
        Path trained = new Path(staging, "distill");
        Configuration conf = new Configuration();
        try {
            starts.getFileSystem(conf).mkdirs(starts);
            trained.getFileSystem(conf).mkdirs(trained);
        } catch (IOException e) {
            throw new UncheckedIOException("creating " + starts + " and " + trained + " for the distillation: "
                    + e.getMessage(), e);
        }
        TokenizeStage.Tokenized tokenized = TokenizeStage.run(sc, "surgery lowrank distill", modelUri, plan.data(),
                plan.split(), plan.window());
        long[] firstRow = new long[plan.data().size()];        // X_l's row of each file's first window
        long tokens = 0;
        for (int f = 0; f < firstRow.length; f++) {
            firstRow[f] = tokens;
            tokens += (long) plan.windowsOf(tokenized.tokenCounts().get(f)) * plan.window();
        }
        long t = tokens;
        JavaRDD<HiddenChunk> chunks = tokenized.files().flatMap(f -> chunks(plan, f).iterator())
                .repartition(partitions);
        List<Training> trainings = new ArrayList<>();          // in MoE layer order
        try {
            JavaRDD<HiddenChunk> last = LayerwisePass.run(sc, "surgery lowrank distill",
                    new LayerwisePass.Model(modelUri, plan.device(), config.num_experts_per_tok), plan.pass(), config,
                    moeLayers[moeLayers.length - 1] + 1, chunks, (layer, attended) -> {
                        trainings.forEach(Training::releaseIfDone);
                        int i = Arrays.binarySearch(moeLayers, layer);
                        SurgeryPiece start = SurgeryPiece.staged(i, 0, lowRank.get(i), starts, conf);
                        trainings.add(Training.start(sc, modelUri, plan, layer, i, firstRow, t, lowRank.get(i),
                                start, attended, trained.toString()));
                    }, null).last();
            last.unpersist(false);
            return trainings.stream().map(Training::result).toList();
        } finally {
            trainings.forEach(Training::release);
            tokenized.files().unpersist(false);
        }
    }

    /**
     * One MoE layer's training, running while the pass goes on: the layer's rows X_l, copied out of the pass's
     * attended chunks and persisted (the pass releases its own RDD once the layer is done), and a one-task job on them.
     */
    private static final class Training {
        private final int layer;
        private final LayerResult lowRank;
        private final JavaRDD<LayerRows> rows;
        private final JavaFutureAction<List<SurgeryPiece>> job;
        private boolean released;

        private Training(int layer, LayerResult lowRank, JavaRDD<LayerRows> rows,
                         JavaFutureAction<List<SurgeryPiece>> job) {
            this.layer = layer;
            this.lowRank = lowRank;
            this.rows = rows;
            this.job = job;
        }

        /**
         * Persists the rows of MoE layer {@code moeLayer} (decoder layer {@code layer}) from {@code attended} and
         * starts its training from {@code start} (the layer's low-rank result, staged: it can outgrow the driver's
         * heap), which stages the trained factors in {@code staging}.
         */
        static Training start(JavaSparkContext sc, String modelUri, DistillPlan plan, int layer, int moeLayer,
                              long[] firstRow, long tokens, LayerResult lowRank, SurgeryPiece start,
                              JavaRDD<AttendedChunk> attended, String staging) {
            sc.setJobDescription("surgery lowrank distill: layer " + layer + "'s " + tokens + " rows of X");
            JavaRDD<LayerRows> rows = attended.map(LayerRows::of).persist(StorageLevel.MEMORY_AND_DISK_SER());
            rows.count();
            sc.setJobDescription("surgery lowrank distill: layer " + layer + ", " + plan.options().steps()
                    + " steps on " + tokens + " tokens in one task");
            JavaFutureAction<List<SurgeryPiece>> job = rows.coalesce(1, false)
                    .mapPartitions(it -> List.of(distill(modelUri, plan, layer, moeLayer, firstRow, tokens,
                            start.result(), it, staging)).iterator())
                    .collectAsync();
            return new Training(layer, lowRank, rows, job);
        }

        /** Waits for the training; the low-rank result with its trained factors, or the training's failure. */
        LayerResult result() {
            try {
                LayerResult trained = job.get().get(0).result();
                LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>(lowRank.tensors());
                tensors.putAll(trained.tensors());
                return new LayerResult(tensors, lowRank.groups(), trained.metrics());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted waiting for layer " + layer + "'s distillation", e);
            } catch (ExecutionException e) {
                throw new IllegalStateException("layer " + layer + "'s distillation failed", e.getCause());
            } finally {
                release();
            }
        }

        /** Releases the rows of a finished training; a failed one fails here, not at the end of the pass. */
        void releaseIfDone() {
            if (job.isDone()) {
                result();
            }
        }

        void release() {
            if (!released) {
                released = true;
                job.cancel(true);   // nothing once it is done
                rows.unpersist(false);
            }
        }
    }

    /** A file's used windows in chunks of up to B; a chunk's index is its first window's. */
    private static List<HiddenChunk> chunks(DistillPlan plan, TokenizedFile f) {
        int[][] all = Windows.cut(f.tokens, plan.window());
        int used = plan.windowsOf(f.tokens.length);
        List<HiddenChunk> out = new ArrayList<>();
        for (int start = 0; start < used; start += plan.batchWindows()) {
            out.add(HiddenChunk.of(f.file, start,
                    Arrays.copyOfRange(all, start, Math.min(used, start + plan.batchWindows()))));
        }
        return out;
    }

    /** One chunk's MoE block input, as a layer's training reads it. */
    static final class LayerRows {
        int file;
        int firstWindow;
        float[] rows;   // [B·S, D]

        LayerRows() {
        }

        static LayerRows of(AttendedChunk c) {
            LayerRows r = new LayerRows();
            r.file = c.chunk().file();
            r.firstWindow = c.chunk().chunk();
            r.rows = Flat.floats(c.normed());
            return r;
        }
    }

    /**
     * One MoE layer's distillation, in one task.
     *
     * @param layer    decoder layer index
     * @param moeLayer its index among the MoE layers
     * @param firstRow per file, the row of X its first window starts
     * @param tokens   T, the rows of X
     * @param lowRank  the layer's low-rank result
     * @param chunks   every chunk's MoE block input, in any order
     * @param staging  where the trained factors are staged: a layer's can outgrow a task result (DeepSeek-V3's
     *                 256 experts at rank 16: 0.45 GB)
     * @return the trained factors (staged) and the layer's metrics
     */
    private static SurgeryPiece distill(String modelUri, DistillPlan plan, int layer, int moeLayer, long[] firstRow,
            long tokens, LayerResult lowRank, Iterator<LayerRows> chunks, String staging) {
        Configuration conf = new Configuration();
        ModelConfig config = ModelFolder.readConfig(new Path(modelUri), conf);
        long d = config.hidden_size;
        INDArray x = Nd4j.createUninitialized(DataType.FLOAT, new long[] {tokens, d}, 'c');          // [T, D]
        long filled = 0;
        while (chunks.hasNext()) {
            LayerRows c = chunks.next();
            long row = firstRow[c.file] + (long) c.firstWindow * plan.window();
            long n = c.rows.length / d;
            x.get(NDArrayIndex.interval(row, row + n), NDArrayIndex.all())
                    .assign(Flat.array(c.rows, new long[] {n, d}));                                  // [B·S, D]
            filled += n;
        }
        if (filled != tokens) {
            throw new IllegalStateException("layer " + layer + "'s distillation met " + filled + " token rows, "
                    + "expected " + tokens);
        }
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            LayerResult r = LowRankDistillation.distill(FusedExperts.perExpert(checkpoint, config), config, layer,
                    lowRank, x, plan.options());
            return SurgeryPiece.staged(moeLayer, 0, new LayerResult(LowRankDistillation.trainedTensors(config, layer,
                    r), null, r.metrics()), new Path(staging), conf);
        }
    }

    static void registerClasses(Kryo kryo) {
        kryo.register(LayerRows.class);
    }
}
