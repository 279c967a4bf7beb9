package org.sparkmoe.train;

import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointFormatException;
import org.sparkmoe.io.LocalFiles;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A {@link TrainState} as one safetensors file (float32): the trainable tensors under {@code param/<key>}, the
 * moments under {@code m/<key>} and {@code v/<key>}, the step count and the caller's fields in
 * {@code __metadata__}. Written atomically through the Hadoop FileSystem API; read back bit for bit.
 */
public final class TrainStateFile {
    private static final String PARAM = "param/";
    private static final String M = "m/";
    private static final String V = "v/";
    private static final String STEP = "step";

    private TrainStateFile() {
    }

    /** A state read back, with the metadata it was written with (the step count included). */
    public record Loaded(TrainState state, Map<String, String> metadata) {
    }

    public static void write(FileSystem fs, Path file, TrainState state, Map<String, String> metadata) {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        state.params().forEach((k, a) -> tensors.put(PARAM + k, a));
        state.m().forEach((k, a) -> tensors.put(M + k, a));
        state.v().forEach((k, a) -> tensors.put(V + k, a));
        LinkedHashMap<String, String> meta = new LinkedHashMap<>(metadata);
        meta.put(STEP, Long.toString(state.step()));
        SafeTensorsWriter.write(fs, file, tensors, meta);
    }

    public static Loaded read(FileSystem fs, Path file) {
        try (LocalFiles local = LocalFiles.of(fs, file.getParent());
             SafeTensorsFile st = SafeTensorsFile.open(local.get(file.getName()))) {
            LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
            LinkedHashMap<String, INDArray> m = new LinkedHashMap<>();
            LinkedHashMap<String, INDArray> v = new LinkedHashMap<>();
            for (String name : st.names()) {
                if (name.startsWith(PARAM)) {
                    String key = name.substring(PARAM.length());
                    params.put(key, st.readFloat(name));
                    m.put(key, st.readFloat(M + key));
                    v.put(key, st.readFloat(V + key));
                } else if (!name.startsWith(M) && !name.startsWith(V)) {
                    throw new CheckpointFormatException(file + ": unexpected tensor " + name
                            + " in a training state (expected param/, m/ and v/ keys)");
                }
            }
            String step = st.metadata().get(STEP);
            if (step == null) {
                throw new CheckpointFormatException(file + ": no '" + STEP + "' in the metadata of a training state");
            }
            return new Loaded(new TrainState(params, m, v, Long.parseLong(step)), Map.copyOf(st.metadata()));
        }
    }
}
