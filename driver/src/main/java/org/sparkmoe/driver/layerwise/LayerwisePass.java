package org.sparkmoe.driver.layerwise;

import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.util.LongAccumulator;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.calib.ImportanceSums;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.LayerCache;
import org.sparkmoe.model.LinearInputs;
import org.sparkmoe.model.ModelEnds;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Routes;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.function.BiFunction;

/**
 * A layer-sequential pass over a job's chunks of windows: the chunks' hidden states after the embedding are a
 * persisted RDD (memory and disk, serialised); each decoder layer is one narrow map that runs just that layer
 * ({@link LayerCache}: the executor maps that layer's weights alone) and persists its output, and the previous
 * layer's RDD is released once the next is computed; every K-th layer's RDD is checkpointed when asked. Every chunk
 * meets the same operations in the same order as in the whole-model forward, on exact float32 hidden states, so
 * what a job computes from the result (eval's NLL, calibrate's statistics) has the same bits.
 *
 * <p>A checkpoint is reliable (Spark's {@code RDD.checkpoint} into the plan's folder): the layer's job computes and
 * persists the RDD, and before that job's action returns Spark writes it out from the persisted blocks in a second
 * job and replaces its lineage by the files. A lost executor's share of a later layer is then computed again from
 * the last checkpoint, in the tasks that need it, not from the embedding (the released RDDs before it are not
 * persisted any more). Each step counts the chunks it computes in a named accumulator, "STEP: chunks computed",
 * which the Spark UI shows per stage and task: a count above the job's chunks is a recomputation.
 *
 * <p>An MoE layer runs in steps when the job looks at what its MoE block reads (a {@link MoeLayerHook}) or with G
 * expert groups: a map runs the attention half and persists h and norm2(h); the hook sees that RDD; then either one
 * map runs the MoE block and finishes the layer, or G maps over it (one per group: P·G tasks in one job) each route
 * the chunk and run only its group's experts, persisting the group's routed rows, and the RDDs are zipped partition
 * by partition (no shuffle) into a map that adds the rows of every group in group order, which is the plan's order,
 * through the MoE block's one combine ({@link MoeBlock#combine}), then the shared expert: bit for bit the whole layer
 * for any G.
 *
 * <p>A pass can collect importance sums ({@code --imatrix}): each layer's step shows its attention's projections (and a
 * dense layer's MLP) their inputs, as the whole-model forward shows them ({@link DecoderLayer#forward} with
 * {@link LinearInputs}), into sums the chunk carries ({@link HiddenChunk}); a treeAggregate over the persisted step
 * merges them on the driver. An MoE block's own inputs (router, experts, shared expert) are the hook's to add.
 *
 * <p>Once a layer's output is computed, the driver reads what the layer stored ({@link LayerBytes}: the hidden-state
 * RDD's bytes in executor memory and on disk, its step RDDs', its checkpoint files') and prints it as one progress
 * line on stderr.
 */
public final class LayerwisePass {
    private static final StorageLevel HIDDEN_STORAGE = StorageLevel.MEMORY_AND_DISK_SER();
    /** The end of the name of each step's accumulator of computed chunks ({@link #counted}). */
    public static final String CHUNKS_COMPUTED = "chunks computed";

    /** What a job does with MoE layer {@code layer}'s attended chunks (h and norm2(h)) before its MoE block runs. */
    public interface MoeLayerHook {
        void accept(int layer, JavaRDD<AttendedChunk> attended);
    }

    /**
     * The model a pass runs.
     *
     * @param uri    model folder URI
     * @param device where the experts' grouped GEMMs run
     * @param topK   experts per token
     */
    public record Model(String uri, Device device, int topK) implements Serializable {
    }

    private LayerwisePass() {
    }

    /**
     * What a pass leaves: the persisted, computed RDD of the last layer's output (the caller unpersists it) and what
     * each layer stored, in layer order.
     */
    public record Output(JavaRDD<HiddenChunk> last, List<LayerBytes> stored) {
    }

    /**
     * Runs the embedding and decoder layers 0..{@code layers}-1 over {@code chunks} (hidden states null).
     * {@code hook} (or null) sees every MoE layer's attended chunks; {@code inputs} (or null) gets what each layer's
     * attention (and dense MLP) projections read, on every chunk.
     */
    public static Output run(JavaSparkContext sc, String job, Model model, LayerwisePlan pass, ModelConfig config,
                             int layers, JavaRDD<HiddenChunk> chunks, MoeLayerHook hook, ImportanceSums inputs) {
        int shown = inputs == null ? 0 : config.num_hidden_layers;  // the sums' layers, 0 for none
        if (pass.checkpointDir() != null) {
            sc.setCheckpointDir(pass.checkpointDir());
        }
        String embedding = job + " --layerwise: embedding";
        JavaRDD<HiddenChunk> hidden = materialise(sc, embedding,
                counted(sc, embedding, chunks.map(c -> embed(model, c))).persist(HIDDEN_STORAGE));
        List<LayerBytes> stored = new ArrayList<>(layers);
        for (int l = 0; l < layers; l++) {
            int layer = l;
            String step = job + " --layerwise: layer " + l + " of " + config.num_hidden_layers;
            List<JavaRDD<?>> done = new ArrayList<>(List.of(hidden));   // released once the layer's output is computed
            JavaRDD<HiddenChunk> next;
            boolean whole = false;                                      // the layer in one map (its chunks carry sums)
            if (config.isMoeLayer(l) && (hook != null || pass.expertGroups() > 1)) {
                JavaRDD<AttendedChunk> attended = materialise(sc, step + ": attention",
                        hidden.map(c -> attend(model, layer, shown, c)).persist(HIDDEN_STORAGE));
                gather(sc, step + ": inputs of the attention", attended.map(AttendedChunk::chunk), inputs);
                done.add(attended);
                if (hook != null) {
                    hook.accept(l, attended);
                }
                next = pass.expertGroups() > 1 ? grouped(sc, model, pass.expertGroups(), l, attended, step, done)
                        : attended.map(c -> moe(model, layer, c));
            } else {
                next = hidden.map(c -> layer(model, layer, shown, c));
                whole = true;
            }
            next = counted(sc, step, next).persist(HIDDEN_STORAGE);
            if (pass.checkpointsAfter(l)) {
                next.checkpoint();
            }
            materialise(sc, step, next);
            LayerBytes bytes = LayerBytes.of(sc, l, next, done.subList(1, done.size()));
            stored.add(bytes);
            System.err.println(job + " --layerwise: " + bytes.line());
            if (whole) {
                gather(sc, step + ": inputs of its projections", next, inputs);
            }
            done.forEach(rdd -> rdd.unpersist(false));
            hidden = next;
        }
        return new Output(hidden, stored);
    }

    /**
     * {@code rdd}, counting the chunks it computes in a named accumulator, "STEP: chunks computed" (the Spark UI shows
     * it per stage and task): a step's count exceeds the job's chunks when partitions of it were computed again, e.g.
     * after a lost executor, from the last persisted or checkpointed RDD.
     */
    private static JavaRDD<HiddenChunk> counted(JavaSparkContext sc, String step, JavaRDD<HiddenChunk> rdd) {
        LongAccumulator computed = sc.sc().longAccumulator(step + ": " + CHUNKS_COMPUTED);
        return rdd.map(c -> {
            computed.add(1);
            return c;
        });
    }

    /** Computes (and persists) every partition of {@code rdd} now, as one job; returns it. */
    private static <T> JavaRDD<T> materialise(JavaSparkContext sc, String description, JavaRDD<T> rdd) {
        sc.setJobDescription(description);
        rdd.count();
        return rdd;
    }

    /** Adds the importance sums the chunks of a computed step carry into {@code inputs} (nothing when null). */
    private static void gather(JavaSparkContext sc, String description, JavaRDD<HiddenChunk> step,
                               ImportanceSums inputs) {
        if (inputs == null) {
            return;
        }
        sc.setJobDescription(description);
        inputs.merge(step.map(c -> c.shown).treeAggregate(
                new ImportanceSums(inputs.layers()), ImportanceSums::merge, ImportanceSums::merge, 2, true));
    }

    /** Empty sums for one chunk's layer to show its inputs to, over {@code layers} layers, or null for 0. */
    private static ImportanceSums sums(int layers) {
        return layers == 0 ? null : new ImportanceSums(layers);
    }

    /** Where layer {@code l} shows its inputs: {@code sums}, or nowhere. */
    private static LinearInputs at(ImportanceSums sums, int l) {
        return sums == null ? LinearInputs.NONE : sums.at(l);
    }

    private static HiddenChunk embed(Model model, HiddenChunk chunk) {
        try (LayerCache.Lease<ModelEnds> ends = LayerCache.ends(model.uri(), model.device())) {
            return chunk.with(Flat.floats(ends.get().embed(chunk.windows)));                // [B·S, D]
        }
    }

    /** Layer {@code l} on a chunk, showing its projections' inputs to sums over {@code shown} layers (0: none). */
    private static HiddenChunk layer(Model model, int l, int shown, HiddenChunk chunk) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(model.uri(), model.device(), l)) {
            ImportanceSums sums = sums(shown);
            INDArray out = layer.get().decoder().forward(chunk.hidden(), chunk.windows.length,
                    chunk.windows[0].length, layer.get().rope(), model.topK(), at(sums, l)).hidden(); // [B·S, D]
            return chunk.with(Flat.floats(out), sums);
        }
    }

    /** MoE layer {@code l}'s attention half on a chunk, showing its projections' inputs as {@link #layer} does. */
    private static AttendedChunk attend(Model model, int l, int shown, HiddenChunk chunk) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(model.uri(), model.device(), l)) {
            DecoderLayer decoder = layer.get().decoder();
            ImportanceSums sums = sums(shown);
            INDArray h = decoder.attend(chunk.hidden(), chunk.windows.length, chunk.windows[0].length,
                    layer.get().rope(), at(sums, l));                                        // [B·S, D]
            return new AttendedChunk(chunk.with(Flat.floats(h), sums), Flat.floats(decoder.postNorm(h)));
        }
    }

    /** The rest of an MoE layer after the attention half, its whole MoE block in one task. */
    private static HiddenChunk moe(Model model, int l, AttendedChunk attended) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(model.uri(), model.device(), l)) {
            DecoderLayer decoder = layer.get().decoder();
            INDArray normed = attended.normed();                                             // [B·S, D]
            INDArray moeOut = decoder.moe().forward(normed, model.topK()).hidden();          // [B·S, D]
            return attended.chunk.with(Flat.floats(decoder.finish(attended.chunk.hidden(), normed, moeOut)));
        }
    }

    /**
     * MoE layer {@code l}'s experts in {@code groups} groups over {@code attended}: runs the groups' rows (one job,
     * persisted) and returns the RDD of the layer's output, not yet persisted or computed; adds the group RDDs to
     * {@code done}, to release once that output is computed.
     */
    private static JavaRDD<HiddenChunk> grouped(JavaSparkContext sc, Model model, int groups, int l,
                                                JavaRDD<AttendedChunk> attended, String step, List<JavaRDD<?>> done) {
        List<JavaRDD<GroupRows>> rows = new ArrayList<>(groups);
        JavaRDD<GroupRows> all = null;
        for (int g = 0; g < groups; g++) {
            int group = g;
            JavaRDD<GroupRows> r = attended.map(c -> groupRows(model, l, groups, group, c)).persist(HIDDEN_STORAGE);
            rows.add(r);
            all = all == null ? r : all.union(r);
        }
        materialise(sc, step + ": " + groups + " expert groups", all);
        done.addAll(rows);
        JavaRDD<GroupRows[]> gathered = rows.get(0).map(r -> new GroupRows[] {r});
        for (int g = 1; g < groups; g++) {
            gathered = gathered.zipPartitions(rows.get(g), (a, b) -> zip(a, b, LayerwisePass::append));
        }
        return attended.zipPartitions(gathered, (a, b) -> zip(a, b, (c, r) -> combine(model, l, c, r)));
    }

    private static GroupRows groupRows(Model model, int l, int groups, int g, AttendedChunk attended) {
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(model.uri(), model.device(), l)) {
            MoeBlock moe = layer.get().decoder().moe();
            INDArray normed = attended.normed();                                             // [B·S, D]
            int[] bounds = moe.expertGroups(groups);
            Routes routes = moe.route(normed, model.topK());
            return new GroupRows(attended.chunk.file, attended.chunk.chunk,
                    Flat.floats(moe.expertOutputs(normed, routes, bounds[g], bounds[g + 1])));   // [N_g, D]
        }
    }

    private static HiddenChunk combine(Model model, int l, AttendedChunk attended, GroupRows[] groups) {
        HiddenChunk chunk = attended.chunk;
        int length = 0;
        for (GroupRows g : groups) {
            if (g.file != chunk.file || g.chunk != chunk.chunk) {
                throw new IllegalStateException("expert group rows of chunk " + g.file + "/" + g.chunk
                        + " met chunk " + chunk.file + "/" + chunk.chunk + " (partitions out of step)");
            }
            length += g.rows.length;
        }
        float[] ys = new float[length];                                                      // [N, D] plan order
        int at = 0;
        for (GroupRows g : groups) {
            System.arraycopy(g.rows, 0, ys, at, g.rows.length);
            at += g.rows.length;
        }
        try (LayerCache.Lease<LayerCache.Layer> layer = LayerCache.layer(model.uri(), model.device(), l)) {
            DecoderLayer decoder = layer.get().decoder();
            INDArray normed = attended.normed();                                             // [B·S, D]
            INDArray rows = Flat.array(ys, new long[] {ys.length / normed.size(1), normed.size(1)});
            Routes routes = decoder.moe().route(normed, model.topK());
            INDArray moeOut = decoder.moe().combine(normed, routes, rows);                  // [B·S, D]
            return chunk.with(Flat.floats(decoder.finish(chunk.hidden(), normed, moeOut)));
        }
    }

    private static GroupRows[] append(GroupRows[] gathered, GroupRows next) {
        GroupRows[] out = Arrays.copyOf(gathered, gathered.length + 1);
        out[gathered.length] = next;
        return out;
    }

    /** Pairs the elements of two partitions computed from the same parent partition (equal lengths). */
    private static <A, B, C> Iterator<C> zip(Iterator<A> a, Iterator<B> b, BiFunction<A, B, C> f) {
        return new Iterator<>() {
            @Override
            public boolean hasNext() {
                if (a.hasNext() != b.hasNext()) {
                    throw new IllegalStateException("zipped partitions of a layer-sequential pass differ in length");
                }
                return a.hasNext();
            }

            @Override
            public C next() {
                return f.apply(a.next(), b.next());
            }
        };
    }
}
