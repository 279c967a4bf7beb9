package org.sparkmoe.driver.logits;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.adapter.ModelCache;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.adapter.AdaptedModel;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.PeftVersionOption;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.io.TensorInfo;
import org.sparkmoe.model.ForwardOutput;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code sparkmoe logits}: one forward pass over given token ids, written with transformers' output
 * conventions, for parity checks against a reference implementation. The driver checks the inputs against
 * config.json and the checkpoint's headers; the forward runs in one Spark task, on an executor, which writes the
 * output file itself: the driver never loads the model.
 */
@Command(name = "logits", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Forward pass over int64 input_ids [B,S] read from a safetensors file.",
                "Writes float32 logits [B,S,V], hidden_states.0..L [B,S,D] (embeddings, after each layer, the last "
                        + "one after the final norm) and router_logits.N [B*S,E] per MoE layer (batch-major rows)."})
public final class LogitsCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;

    @Option(names = "--adapter", paramLabel = "DIR",
            description = "Adapter folder, applied unmerged: PEFT LoRA as PEFT runs it (LoRA products beside the frozen "
                    + "expert weights; a trained router replaces the model's), or a μMoE adapter (train --adapter mumoe-*).")
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

    @Mixin
    SparkOptions spark;

    @Override
    public Integer call() throws IOException {
        Configuration conf = new Configuration();
        OutputFolder.requireFile("--out", new Path(Paths.qualify(out, conf)), conf, "logits", "safetensors");
        String version = peftVersion.checked(adapter);
        int[][] tokens = readInputIds(Paths.qualify(inputIds, conf), conf);
        String modelUri = model.uri(conf);
        ModelConfig config = ModelFolder.readConfig(new Path(modelUri), conf);
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            ModelSchema.check(config, checkpoint);
        }
        String adapterUri = adapter == null ? null : Paths.qualify(adapter, conf);
        if (adapterUri != null) {
            AdaptedModel.check(new Path(adapterUri), conf, config, version); // reject a bad adapter before Spark starts
        }
        int vocab = config.vocab_size;
        for (int b = 0; b < tokens.length; b++) {
            for (int s = 0; s < tokens[b].length; s++) {
                if (tokens[b][s] < 0 || tokens[b][s] >= vocab) {
                    throw new IllegalArgumentException(inputIds + ": input_ids[" + b + "," + s + "] = " + tokens[b][s]
                            + " is outside the model's vocabulary [0, " + vocab + ")");
                }
            }
        }
        int k = topK == null ? config.num_experts_per_tok : topK;
        if (config.num_experts > 0 && (k < 1 || k > config.num_experts)) {
            throw new IllegalArgumentException("--top-k must be in [1, " + config.num_experts
                    + "] (the model's experts), got " + k);
        }
        String target = Paths.qualify(out, conf);
        int written;
        try (JavaSparkContext sc = SparkContexts.start("sparkmoe logits", spark.master)) {
            sc.setJobDescription("logits: forward of " + tokens.length + " x " + tokens[0].length + " tokens");
            written = sc.parallelize(List.of(0), 1)
                    .map(unused -> forward(modelUri, adapterUri, version, tokens, k, target))
                    .first();
        }
        System.err.println("logits: wrote " + written + " tensors for " + tokens.length + " x " + tokens[0].length
                + " tokens to " + target);
        return 0;
    }

    /** On an executor: the forward with outputs captured, written to {@code target}; the tensor count. */
    private static int forward(String modelUri, String adapterUri, String peftVersion, int[][] tokens, int topK,
                               String target) {
        ForwardOutput output;
        try (ModelCache.Lease model = ModelCache.lease(modelUri, adapterUri, peftVersion, Device.CPU)) {
            output = model.model().forward(tokens, topK, true);
        }
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
        Configuration conf = new Configuration();
        SafeTensorsWriter.write(Paths.fileSystem(target, conf), new Path(target), tensors, Map.of("format", "pt"));
        return tensors.size();
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
