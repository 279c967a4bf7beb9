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

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Runs a {@link LayerSurgery} expert-parallel: one Spark task per (MoE layer, part) — each opens the memory-mapped
 * checkpoint on its executor, reads only the experts it needs and does the math there; the driver only collects the
 * results and merges each layer's parts in order.
 */
public final class SurgeryJob {
    private SurgeryJob() {
    }

    /**
     * @param moeLayers decoder indices of the MoE layers
     * @return one result per MoE layer, in order
     */
    public static List<LayerResult> run(JavaSparkContext sc, String modelUri, LayerSurgery surgery, int[] moeLayers,
            int partitions) {
        List<int[]> work = new ArrayList<>(); // {decoder layer, MoE layer, part}
        for (int i = 0; i < moeLayers.length; i++) {
            for (int part = 0; part < surgery.parts(); part++) {
                work.add(new int[] {moeLayers[i], i, part});
            }
        }
        List<SurgeryPiece> pieces = new ArrayList<>(sc.parallelize(work, Math.min(partitions, work.size()))
                .map(w -> {
                    Configuration conf = new Configuration();
                    try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
                        TensorSource experts = FusedExperts.perExpert(checkpoint,
                                ModelFolder.readConfig(new Path(modelUri), conf));
                        return SurgeryPiece.of(w[1], w[2], surgery.applyPart(experts, w[0], w[1], w[2]));
                    }
                })
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
}
