package org.sparkmoe.driver.router;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.SafeTensorsWriter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Writes a checkpoint folder that is the model's own with some tensors replaced: every non-weight file
 * (config.json, tokenizer.json, ...) copied, and all tensors (widened to float32, in the checkpoint's order)
 * in one {@code model.safetensors}.
 */
final class CheckpointCopy {
    private CheckpointCopy() {
    }

    static void withReplaced(Path modelDir, Path outDir, Map<String, INDArray> replaced, Configuration conf) {
        try {
            FileSystem in = modelDir.getFileSystem(conf);
            FileSystem out = outDir.getFileSystem(conf);
            for (FileStatus status : in.listStatus(modelDir)) {
                String name = status.getPath().getName();
                if (status.isFile() && !name.endsWith(".safetensors") && !name.equals("model.safetensors.index.json")
                        && !name.startsWith(".")) {
                    byte[] bytes;
                    try (FSDataInputStream stream = in.open(status.getPath())) {
                        bytes = stream.readAllBytes();
                    }
                    AtomicFile.write(out, new Path(outDir, name), bytes);
                }
            }
            LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
            try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
                for (String name : checkpoint.names()) {
                    INDArray replacement = replaced.get(name);
                    if (replacement != null && !Arrays.equals(replacement.shape(), checkpoint.shape(name))) {
                        throw new IllegalArgumentException("new " + name + " is " + Arrays.toString(replacement.shape())
                                + ", the checkpoint's is " + Arrays.toString(checkpoint.shape(name)));
                    }
                    tensors.put(name, replacement != null ? replacement : checkpoint.readFloat(name));
                }
            }
            SafeTensorsWriter.write(out, new Path(outDir, "model.safetensors"), tensors, Map.of("format", "pt"));
        } catch (IOException e) {
            throw new UncheckedIOException("writing the checkpoint " + outDir + ": " + e.getMessage(), e);
        }
    }
}
