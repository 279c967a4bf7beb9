package org.sparkmoe.driver.logits;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.PeftVersionOption;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.io.TensorInfo;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.MoeTransformer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code sparkmoe logits}: one forward pass over given token ids, written with transformers' output
 * conventions, for parity checks against a reference implementation. Runs in the driver JVM, no Spark job.
 */
@Command(name = "logits", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Forward pass over int64 input_ids [B,S] read from a safetensors file.",
                "Writes float32 logits [B,S,V], hidden_states.0..L [B,S,D] (embeddings, after each layer, the last "
                        + "one after the final norm) and router_logits.N [B*S,E] per MoE layer (batch-major rows)."})
public final class LogitsCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;

    @Option(names = "--adapter", paramLabel = "DIR",
            description = "PEFT LoRA adapter folder, applied as PEFT runs it unmerged (LoRA products beside the frozen "
                    + "expert weights; a trained router replaces the model's).")
    String adapter;

    @Mixin
    PeftVersionOption peftVersion;

    @Option(names = "--input-ids", required = true, paramLabel = "FILE",
            description = "safetensors file holding input_ids, int64 (or int32) [B,S].")
    String inputIds;

    @Option(names = "--out", required = true, paramLabel = "FILE", description = "Output safetensors file.")
    String out;

    @Option(names = "--top-k", paramLabel = "K", description = "Experts per token. Default: the model's.")
    Integer topK;

    @Override
    public Integer call() throws IOException {
        Configuration conf = new Configuration();
        OutputFolder.requireFile("--out", new Path(Paths.qualify(out, conf)), conf, "logits", "safetensors");
        String version = peftVersion.checked(adapter);
        int[][] tokens = readInputIds(Paths.qualify(inputIds, conf), conf);
        MoeTransformer transformer = ModelCache.load(new Path(model.uri(conf)), conf,
                adapter == null ? null : new Path(Paths.qualify(adapter, conf)), version, Device.CPU);
        int vocab = transformer.config().vocab_size;
        for (int b = 0; b < tokens.length; b++) {
            for (int s = 0; s < tokens[b].length; s++) {
                if (tokens[b][s] < 0 || tokens[b][s] >= vocab) {
                    throw new IllegalArgumentException(inputIds + ": input_ids[" + b + "," + s + "] = " + tokens[b][s]
                            + " is outside the model's vocabulary [0, " + vocab + ")");
                }
            }
        }
        int k = topK == null ? transformer.config().num_experts_per_tok : topK;
        if (transformer.config().num_experts > 0 && (k < 1 || k > transformer.config().num_experts)) {
            throw new IllegalArgumentException("--top-k must be in [1, " + transformer.config().num_experts
                    + "] (the model's experts), got " + k);
        }
        ForwardOutput output = transformer.forward(tokens, k, true);
        long batch = tokens.length;
        long seq = tokens[0].length;
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("logits", output.logits().reshape(batch, seq, output.logits().size(1)));
        for (int n = 0; n < output.hiddenStates().size(); n++) {
            INDArray h = output.hiddenStates().get(n);
            tensors.put("hidden_states." + n, h.reshape(batch, seq, h.size(1)));
        }
        for (int n = 0; n < output.routerLogits().size(); n++) {
            tensors.put("router_logits." + n, output.routerLogits().get(n));
        }
        String target = Paths.qualify(out, conf);
        SafeTensorsWriter.write(Paths.fileSystem(target, conf), new Path(target), tensors, Map.of("format", "pt"));
        System.err.println("logits: wrote " + tensors.size() + " tensors for " + batch + " x " + seq + " tokens to "
                + target);
        return 0;
    }

    /** input_ids [B, S] from a safetensors file on any Hadoop file system. */
    private static int[][] readInputIds(String uri, Configuration conf) throws IOException {
        Path path = new Path(uri);
        FileSystem fs = Paths.fileSystem(uri, conf);
        if (!fs.exists(path)) {
            throw new IllegalArgumentException("input ids file not found: " + uri);
        }
        java.nio.file.Path local;
        java.nio.file.Path copy = null;
        if ("file".equals(fs.getUri().getScheme())) {
            local = java.nio.file.Path.of(path.toUri());
        } else {
            copy = Files.createTempFile("sparkmoe-input-ids", ".safetensors");
            fs.copyToLocalFile(path, new Path(copy.toUri()));
            local = copy;
        }
        try (SafeTensorsFile file = SafeTensorsFile.open(local)) {
            if (!file.has("input_ids")) {
                throw new IllegalArgumentException(uri + " holds no tensor named input_ids");
            }
            TensorInfo info = file.info("input_ids");
            long[] shape = info.shape();
            if (shape.length != 2 || shape[0] < 1 || shape[1] < 1) {
                throw new IllegalArgumentException(uri + ": input_ids must be [B,S] with B, S ≥ 1, got "
                        + java.util.Arrays.toString(shape));
            }
            long[] ids = file.readLongs("input_ids");
            int[][] tokens = new int[(int) shape[0]][(int) shape[1]];
            for (int b = 0; b < shape[0]; b++) {
                for (int s = 0; s < shape[1]; s++) {
                    long id = ids[(int) (b * shape[1] + s)];
                    if (id < 0 || id > Integer.MAX_VALUE) {
                        throw new IllegalArgumentException(uri + ": input_ids[" + b + "," + s + "] = " + id
                                + " is not a valid token id");
                    }
                    tokens[b][s] = (int) id;
                }
            }
            return tokens;
        } finally {
            if (copy != null) {
                Files.deleteIfExists(copy);
            }
        }
    }
}
