package org.sparkmoe.driver.surgery;

import com.esotericsoftware.kryo.Kryo;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.surgery.LayerResult;

import java.util.LinkedHashMap;

/** A {@link LayerResult} flattened into plain arrays, as it travels from an executor task to the driver (Kryo). */
public final class SurgeryPiece {
    int layer;           // MoE layer index
    int part;
    String[] names;
    long[][] shapes;
    float[][] data;      // each tensor 'c'-order float32
    int[][] groups;      // null unless the surgery regrouped experts
    String[] metricNames;
    double[] metrics;

    /** For Kryo. */
    SurgeryPiece() {
    }

    static SurgeryPiece of(int layer, int part, LayerResult result) {
        SurgeryPiece p = new SurgeryPiece();
        p.layer = layer;
        p.part = part;
        int n = result.tensors().size();
        p.names = new String[n];
        p.shapes = new long[n][];
        p.data = new float[n][];
        int i = 0;
        for (var e : result.tensors().entrySet()) {
            p.names[i] = e.getKey();
            p.shapes[i] = e.getValue().shape();
            p.data[i] = e.getValue().castTo(DataType.FLOAT).dup('c').data().asFloat();
            i++;
        }
        p.groups = result.groups();
        p.metricNames = result.metrics().keySet().toArray(new String[0]);
        p.metrics = result.metrics().values().stream().mapToDouble(Double::doubleValue).toArray();
        return p;
    }

    LayerResult result() {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        for (int i = 0; i < names.length; i++) {
            tensors.put(names[i], Nd4j.create(data[i], shapes[i], 'c'));
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
        kryo.register(float[][].class);
        DistillJob.registerClasses(kryo);
    }
}
