package org.sparkmoe.driver.layerwise;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.RDDInfo;
import org.sparkmoe.driver.MemoryPlan;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;

/**
 * What decoder layer {@code layer} of a layer-sequential pass stored, read on the driver once the layer's output is
 * computed: the serialised blocks of its output hidden-state RDD in the executors' memory and on their local disks
 * (Spark's RDD storage info), the same of the RDDs it persisted on the way and released with its input (an MoE layer
 * run in steps: the attended chunks, h and norm2(h), and the expert groups' rows), and the bytes of its checkpoint
 * files on reliable storage (the Hadoop file system's content summary of the RDD's checkpoint folder; 0 when the layer
 * is not checkpointed).
 *
 * @param memory     the output RDD's bytes in executor memory
 * @param disk       the output RDD's bytes on executor disks
 * @param steps      the step RDDs' bytes, memory and disk together
 * @param checkpoint the checkpoint files' bytes
 */
public record LayerBytes(int layer, long memory, long disk, long steps, long checkpoint) {

    /** Layer {@code layer}'s bytes, with {@code output} computed and persisted and {@code steps} not yet released. */
    static LayerBytes of(JavaSparkContext sc, int layer, JavaRDD<?> output, List<JavaRDD<?>> steps) {
        long[] stored = stored(sc, output);
        long stepBytes = 0;
        for (JavaRDD<?> step : steps) {
            long[] s = stored(sc, step);
            stepBytes += s[0] + s[1];
        }
        long checkpoint = 0;
        if (output.getCheckpointFile().isPresent()) {
            Path folder = new Path(output.getCheckpointFile().get());
            try {
                checkpoint = folder.getFileSystem(sc.hadoopConfiguration()).getContentSummary(folder).getLength();
            } catch (IOException e) {
                throw new UncheckedIOException("reading the size of the checkpoint " + folder, e);
            }
        }
        return new LayerBytes(layer, stored[0], stored[1], stepBytes, checkpoint);
    }

    /** {memory, disk} bytes of {@code rdd}'s persisted blocks over every executor; zeros when none is stored. */
    private static long[] stored(JavaSparkContext sc, JavaRDD<?> rdd) {
        for (RDDInfo info : sc.sc().getRDDStorageInfo()) {
            if (info.id() == rdd.id()) {
                return new long[] {info.memSize(), info.diskSize()};
            }
        }
        return new long[2];
    }

    /** The output hidden states' bytes, memory and disk together. */
    public long hidden() {
        return memory + disk;
    }

    /** "layer 3: hidden states 12.0 MiB (memory 12.0 MiB, disk 0 B), steps 24.0 MiB, checkpoint 12.0 MiB". */
    public String line() {
        return "layer " + layer + ": hidden states " + MemoryPlan.size(hidden()) + " (memory "
                + MemoryPlan.size(memory) + ", disk " + MemoryPlan.size(disk) + ")"
                + (steps > 0 ? ", steps " + MemoryPlan.size(steps) : "")
                + (checkpoint > 0 ? ", checkpoint " + MemoryPlan.size(checkpoint) : "");
    }

    /**
     * A report's {@code layerwise} section: the sums over the layers, then one entry per layer, in bytes:
     * {@code {"layers", "hidden_memory_bytes", "hidden_disk_bytes", "step_bytes", "checkpoint_bytes",
     * "per_layer": [{"layer", "memory", "disk", "steps", "checkpoint"}, ...]}}.
     */
    public static ObjectNode json(List<LayerBytes> layers) {
        ObjectNode root = JsonNodeFactory.instance.objectNode();
        root.put("layers", layers.size());
        root.put("hidden_memory_bytes", layers.stream().mapToLong(LayerBytes::memory).sum());
        root.put("hidden_disk_bytes", layers.stream().mapToLong(LayerBytes::disk).sum());
        root.put("step_bytes", layers.stream().mapToLong(LayerBytes::steps).sum());
        root.put("checkpoint_bytes", layers.stream().mapToLong(LayerBytes::checkpoint).sum());
        ArrayNode perLayer = root.putArray("per_layer");
        for (LayerBytes l : layers) {
            perLayer.addObject().put("layer", l.layer).put("memory", l.memory).put("disk", l.disk)
                    .put("steps", l.steps).put("checkpoint", l.checkpoint);
        }
        return root;
    }
}
