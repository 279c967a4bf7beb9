package org.sparkmoe.driver.surgery;

import com.esotericsoftware.kryo.Kryo;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.surgery.LayerResult;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.LocalFiles;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;

/**
 * A {@link LayerResult} as it travels between the driver and executor tasks (a task result through Kryo, or in a
 * task's closure): names, metrics and groups, with the tensors staged in a float32 safetensors file written on the
 * output's file system (expert tensors: a layer of Mixtral-8x7B is gigabytes, more than a task result may carry to the
 * driver or a closure to a task).
 */
public final class SurgeryPiece implements java.io.Serializable {
    int layer;           // MoE layer index
    int part;
    String[] names;
    long[][] shapes;
    String staged;       // URI of the safetensors file holding the tensors
    int[][] groups;      // null unless the surgery regrouped experts
    String[] metricNames;
    double[] metrics;

    /** For Kryo. */
    SurgeryPiece() {
    }

    /**
     * {@code result} with its tensors written (float32, exactly) to {@code dir/piece-L-P.safetensors}: only names,
     * shapes and numbers travel.
     */
    static SurgeryPiece staged(int layer, int part, LayerResult result, Path dir, Configuration conf) {
        SurgeryPiece p = described(layer, part, result);
        List<NamedTensor> tensors = new ArrayList<>();
        result.tensors().forEach((name, t) -> tensors.add(new NamedTensor.Floats(name,
                t.dataType() == DataType.FLOAT ? t : t.castTo(DataType.FLOAT))));
        Path file = new Path(dir, "piece-" + layer + "-" + part + ".safetensors");
        try {
            SafeTensorsWriter.write(file.getFileSystem(conf), file, tensors, java.util.Map.of());
        } catch (IOException e) {
            throw new UncheckedIOException("staging surgery results in " + file, e);
        }
        p.staged = file.toString();
        return p;
    }

    /** Everything of {@code result} but the tensors' values: names, shapes, groups and metrics. */
    private static SurgeryPiece described(int layer, int part, LayerResult result) {
        SurgeryPiece p = new SurgeryPiece();
        p.layer = layer;
        p.part = part;
        p.names = result.tensors().keySet().toArray(new String[0]);
        p.shapes = result.tensors().values().stream().map(INDArray::shape).toArray(long[][]::new);
        p.groups = result.groups();
        p.metricNames = result.metrics().keySet().toArray(new String[0]);
        p.metrics = result.metrics().values().stream().mapToDouble(Double::doubleValue).toArray();
        return p;
    }

    /** The result; staged tensors are float32 arrays over a read-only map of the staged file (no copy). */
    LayerResult result() {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        Path file = new Path(staged);
        Configuration conf = new Configuration();
        try (LocalFiles local = LocalFiles.of(file.getFileSystem(conf), file.getParent());
             SafeTensorsFile read = SafeTensorsFile.open(local.get(file.getName()))) {
            for (String name : names) {
                tensors.put(name, read.stored(name));
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading staged surgery results " + file, e);
        }
        LinkedHashMap<String, Double> m = new LinkedHashMap<>();
        for (int i = 0; i < metricNames.length; i++) {
            m.put(metricNames[i], metrics[i]);
        }
        return new LayerResult(tensors, groups, m);
    }

    public static void registerClasses(Kryo kryo) {
        kryo.register(SurgeryPiece.class);
        kryo.register(String[].class);
        kryo.register(long[].class);
        kryo.register(long[][].class);
        DistillJob.registerClasses(kryo);
    }
}
