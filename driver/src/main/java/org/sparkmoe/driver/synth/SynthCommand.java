package org.sparkmoe.driver.synth;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.driver.CheckpointOutputOptions;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.ModelShape;
import org.sparkmoe.train.RandomWeights;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code sparkmoe synth}: a checkpoint folder of random weights in a real model's exact tensor names, shapes and
 * dtype, for dry-running memory and speed before downloading the model. Runs in the driver JVM, no Spark job; the
 * tensors are generated and written one at a time, so memory does not grow with the model.
 */
@Command(name = "synth", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Write a Hugging Face checkpoint folder of random weights in the exact shapes and dtype of a "
                + "real model, to try memory and speed on a cluster before downloading the real weights.",
                "config.json is the real model's (num_hidden_layers set by --layers, torch_dtype by --dtype); linear "
                        + "weights, routers and embeddings are normal(0, initializer_range), norms 1, biases 0, all "
                        + "derived from --seed and each tensor's name. The tokenizer is SparkMoE's tiny example one "
                        + "(its ids are valid for every shape), so eval, train and surgery run on the folder; the "
                        + "outputs are meaningless except for memory and speed. Tensors are generated and written one "
                        + "at a time (no Spark job); the folder appears only once complete.",
                "Shapes: mixtral-8x7b (mistralai/Mixtral-8x7B-v0.1, 46.7B parameters, 93 GB in bf16), "
                        + "qwen1.5-moe-a2.7b (Qwen/Qwen1.5-MoE-A2.7B, 14.3B, 29 GB), glm-4.5-air (zai-org/GLM-4.5-Air, "
                        + "106B, 214 GB), mistral-7b "
                        + "(mistralai/Mistral-7B-v0.1, 7.24B, 14.5 GB), gpt-oss-20b (openai/gpt-oss-20b, 20.9B, 42 GB in "
                        + "bf16; released with MXFP4 experts, written here in --dtype), gpt-oss-120b "
                        + "(openai/gpt-oss-120b, 116.8B, 234 GB in bf16), deepseek-v2-lite (deepseek-ai/DeepSeek-V2-Lite, "
                        + "15.7B, 31 GB), deepseek-v3 (deepseek-ai/DeepSeek-V3, 671B, 1.34 TB in bf16; the release is "
                        + "FP8), kimi-k2 (moonshotai/Kimi-K2-Instruct, 1.03T, 2.05 TB in bf16; the release is FP8), "
                        + "qwen3-30b-a3b (Qwen/Qwen3-30B-A3B, 30.5B, 61 GB), olmoe-1b-7b (allenai/OLMoE-1B-7B-0924, "
                        + "6.92B, 13.8 GB). "
                        + "DeepSeek's first_k_dense_replace is capped at --layers − 1, so a few layers hold an MoE "
                        + "layer."})
public final class SynthCommand implements Callable<Integer> {
    @Option(names = "--shape", required = true, paramLabel = "NAME", converter = ShapeConverter.class,
            description = "The real model: mixtral-8x7b, qwen1.5-moe-a2.7b, glm-4.5-air, mistral-7b, gpt-oss-20b, "
                    + "gpt-oss-120b, deepseek-v2-lite, deepseek-v3, kimi-k2, qwen3-30b-a3b or olmoe-1b-7b.")
    ModelShape shape;

    @Option(names = "--layers", paramLabel = "N",
            description = "Decoder layers (num_hidden_layers). Default: the real model's.")
    Integer layers;

    @Option(names = "--out", required = true, paramLabel = "DIR",
            description = "Output model folder; must not exist yet (or be empty).")
    String out;

    @Option(names = "--dtype", paramLabel = "bf16|f16|f32", converter = CheckpointOutputOptions.DtypeConverter.class,
            description = "Dtype of every tensor. Default: the real model's (bf16 for all).")
    DType dtype;

    @Option(names = "--seed", defaultValue = "42", paramLabel = "N",
            description = "Root seed of the weights: the same seed gives the same bytes. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--max-shard-size", defaultValue = "5GB", paramLabel = "SIZE", converter = CheckpointOutputOptions.SizeConverter.class,
            description = "Largest safetensors shard, in bytes or with a unit (KB, MB, GB = 10^3, 10^6, 10^9 as in "
                    + "transformers; KiB, MiB, GiB = 2^10, 2^20, 2^30). Bigger models are written as "
                    + "model-0000i-of-0000N.safetensors with model.safetensors.index.json. Default: ${DEFAULT-VALUE}.")
    long maxShardBytes;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** The tokenizer files put into every folder (the tiny example model's, bundled in the driver jar). */
    static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json");

    @Override
    public Integer call() {
        Configuration conf = new Configuration();
        int realLayers = shape.config().get("num_hidden_layers").asInt();
        int n = layers == null ? realLayers : layers;
        if (n < 1) {
            throw new IllegalArgumentException("--layers must be ≥ 1, got " + n);
        }
        Path target = new Path(Paths.qualify(out, conf));
        OutputFolder.requireNew("--out", target, conf);
        DType d = dtype == null ? shape.publishedDtype() : dtype;
        ObjectNode json = shape.config(n, d);
        ModelConfig config = ModelConfig.parse(json.toString(), shape.shapeName() + " config.json");
        long parameters = ModelSchema.parameterCount(config);
        List<NamedTensor> tensors = RandomWeights.tensors(config, d, seed, shape.initializerRange());
        Map<String, byte[]> tokenizer = tokenizerFiles();
        PrintWriter err = spec.commandLine().getErr();
        err.printf(Locale.ROOT, "synth: %s (%s), %d of %d layers, %s, %,d parameters, %d tensors -> %s%n",
                shape.shapeName(), shape.huggingFaceId(), n, realLayers, ModelShape.torchName(d), parameters,
                tensors.size(), target);
        err.flush();
        Progress progress = new Progress(err, tensors);
        OutputFolder.makeRoom(target, conf);
        long bytes = CheckpointFolderWriter.write(json, progress.wrap(tensors), tokenizer, target, conf,
                maxShardBytes);
        PrintWriter stdout = spec.commandLine().getOut();
        stdout.printf(Locale.ROOT, "%s: %s with %d layers, %,d parameters, %,d bytes of %s tensors%n",
                target, shape.shapeName(), n, parameters, bytes, ModelShape.torchName(d));
        stdout.flush();
        return 0;
    }

    private static Map<String, byte[]> tokenizerFiles() {
        Map<String, byte[]> files = new LinkedHashMap<>();
        for (String name : TOKENIZER_FILES) {
            try (InputStream in = SynthCommand.class.getResourceAsStream("tokenizer/" + name)) {
                if (in == null) {
                    throw new IllegalStateException("the driver jar lacks the bundled tokenizer file " + name);
                }
                files.put(name, in.readAllBytes());
            } catch (IOException e) {
                throw new UncheckedIOException("reading the bundled " + name, e);
            }
        }
        return files;
    }

    /** Prints "synth: 12/291 tensors, 3.4/93.4 GB, 85 MB/s" on stderr at most every two seconds, and at the end. */
    private static final class Progress {
        private final PrintWriter err;
        private final int totalTensors;
        private final long totalBytes;
        private final long started = System.nanoTime();
        private long lastPrinted = started;
        private int tensorsDone;
        private long bytesDone;

        Progress(PrintWriter err, List<NamedTensor> tensors) {
            this.err = err;
            this.totalTensors = tensors.size();
            this.totalBytes = tensors.stream().mapToLong(NamedTensor::byteLength).sum();
        }

        List<NamedTensor> wrap(List<NamedTensor> tensors) {
            List<NamedTensor> wrapped = new ArrayList<>(tensors.size());
            for (NamedTensor t : tensors) {
                wrapped.add(new NamedTensor.Streamed(t.name(), t.dtype(), t.shape(), stream -> {
                    t.writeData(stream);
                    done(t.byteLength());
                }));
            }
            return wrapped;
        }

        private void done(long bytes) {
            tensorsDone++;
            bytesDone += bytes;
            long now = System.nanoTime();
            if (now - lastPrinted >= 2_000_000_000L || tensorsDone == totalTensors) {
                lastPrinted = now;
                double seconds = Math.max(1e-9, (now - started) / 1e9);
                err.printf(Locale.ROOT, "synth: %d/%d tensors, %.2f/%.2f GB, %.0f MB/s%n", tensorsDone,
                        totalTensors, bytesDone / 1e9, totalBytes / 1e9, bytesDone / 1e6 / seconds);
                err.flush();
            }
        }
    }

    static final class ShapeConverter implements CommandLine.ITypeConverter<ModelShape> {
        @Override
        public ModelShape convert(String value) {
            return ModelShape.named(value).orElseThrow(() -> new CommandLine.TypeConversionException(
                    "unknown shape '" + value + "' (known: " + ModelShape.names() + ")"));
        }
    }
}
