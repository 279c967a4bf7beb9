package org.sparkmoe.driver.surgery;

import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.ModelFolder;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LayerSurgery;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.function.BiFunction;

/**
 * Runs a {@link LayerSurgery} expert-parallel: one Spark task per (MoE layer, part) — each opens the memory-mapped
 * checkpoint on its executor, reads only the experts it needs, does the math there and stages its new tensors in a
 * file under {@code staging} ({@link SurgeryPiece#staged}); the driver collects only names and numbers, and maps the
 * staged files, so neither a task result nor the driver's memory holds a layer's tensors. Work a layer's parts share
 * ({@link LayerSurgery#sharesWork}: reduce --by weights' k-means) runs first, one task per MoE layer.
 */
public final class SurgeryJob {
    private SurgeryJob() {
    }

    /**
     * @param moeLayers decoder indices of the MoE layers
     * @param staging   an existing folder every executor can write and the driver read (the tasks' staged tensors)
     * @return one result per MoE layer, in order
     */
    public static List<LayerResult> run(JavaSparkContext sc, String modelUri, LayerSurgery original, int[] moeLayers,
            int partitions, Path staging) {
        LayerSurgery surgery = original.sharesWork()
                ? original.withShared(shared(sc, modelUri, original, moeLayers, partitions)) : original;
        String stagingUri = staging.toString();
        List<int[]> work = new ArrayList<>(); // {decoder layer, MoE layer, part}
        for (int i = 0; i < moeLayers.length; i++) {
            for (int part = 0; part < surgery.parts(); part++) {
                work.add(new int[] {moeLayers[i], i, part});
            }
        }
        List<SurgeryPiece> pieces = new ArrayList<>(sc.parallelize(work, Math.min(partitions, work.size()))
                .map(w -> onExperts(modelUri, (experts, conf) -> SurgeryPiece.staged(w[1], w[2],
                        surgery.applyPart(experts, w[0], w[1], w[2]), new Path(stagingUri), conf)))
                .collect());
        pieces.sort(Comparator.<SurgeryPiece>comparingInt(p -> p.layer).thenComparingInt(p -> p.part));
        List<LayerResult> out = new ArrayList<>();
        for (int i = 0; i < moeLayers.length; i++) {
            List<LayerResult> parts = new ArrayList<>();
            for (SurgeryPiece p : pieces.subList(i * surgery.parts(), (i + 1) * surgery.parts())) {
                parts.add(p.result());
            }
            out.add(LayerResult.merge(parts));
        }
        return out;
    }

    /** Each MoE layer's {@link LayerSurgery#shared} work, one task per layer, in MoE layer order. */
    private static Serializable[] shared(JavaSparkContext sc, String modelUri, LayerSurgery surgery, int[] moeLayers,
            int partitions) {
        List<int[]> layers = new ArrayList<>(); // {decoder layer, MoE layer}
        for (int i = 0; i < moeLayers.length; i++) {
            layers.add(new int[] {moeLayers[i], i});
        }
        return sc.parallelize(layers, Math.min(partitions, layers.size()))
                .map(w -> onExperts(modelUri, (experts, conf) -> surgery.shared(experts, w[0], w[1])))
                .collect().toArray(new Serializable[0]);
    }

    /** {@code work} on the checkpoint at {@code modelUri}, opened on this executor, its experts read per expert. */
    private static <T> T onExperts(String modelUri, BiFunction<TensorSource, Configuration, T> work) {
        Configuration conf = new Configuration();
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            return work.apply(FusedExperts.perExpert(checkpoint, ModelFolder.readConfig(new Path(modelUri), conf)), conf);
        }
    }
}
