package org.sparkmoe.adapter;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFileSystem;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.io.LocalFiles;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A LoRA adapter of a MoE model: its {@link AdapterConfig} and the stacked trainable state (float32, keys and
 * order of the shared contract: per MoE layer, projections gate/up/down with lora_A [E, R, in] before lora_B
 * [E, out, R], the router [E, D] last when trained), checked against the model's config.json.
 *
 * <p>On disk it is a PEFT adapter folder: {@code adapter_config.json} and {@code adapter_model.safetensors} with
 * one [R, in] / [out, R] tensor per expert (and for the shared expert, when adapted) under PEFT's key names, each file written atomically through the Hadoop
 * FileSystem API (the weights first, so a folder whose config is present has its weights). A PEFT adapter on
 * transformers 5's fused expert parameters ({@code target_parameters}) is read too ({@link FusedAdapterTensors}).
 * gpt-oss adapters are written and read fused only (its experts exist only as fused parameters), in PEFT ≥ 0.19.1's
 * shapes.
 */
public final class PeftAdapter {
    public static final String CONFIG_FILE = "adapter_config.json";
    public static final String WEIGHTS_FILE = "adapter_model.safetensors";

    private final ModelConfig model;
    private final AdapterConfig config;
    private final LinkedHashMap<String, INDArray> state;
    /** Decoder layer → the checkpoint's frozen e_score_correction_bias [E], written beside a trained router. */
    private final Map<Integer, INDArray> routerBiases;

    private PeftAdapter(ModelConfig model, AdapterConfig config, LinkedHashMap<String, INDArray> state) {
        this(model, config, state, Map.of());
    }

    private PeftAdapter(ModelConfig model, AdapterConfig config, LinkedHashMap<String, INDArray> state,
                        Map<Integer, INDArray> routerBiases) {
        this.model = model;
        this.config = config;
        this.state = state;
        this.routerBiases = routerBiases;
    }

    /** Whether the written adapter carries each trained router's correction bias (a sigmoid router, trained). */
    boolean writesRouterBiases() {
        return config.trainRouter() && model.routing.scoreCorrectionBias();
    }

    /**
     * The same adapter with the checkpoint's {@code e_score_correction_bias} of every MoE layer, which a trained
     * sigmoid router's PEFT copy must carry (see {@link AdapterKeys#peftRouterBias}); itself when none is needed.
     */
    public PeftAdapter withRouterBiases(TensorSource checkpoint) {
        if (!writesRouterBiases()) {
            return this;
        }
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        Map<Integer, INDArray> biases = new java.util.TreeMap<>();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (model.isMoeLayer(l)) {
                biases.put(l, checkpoint.readFloat(layout.scoreCorrectionBias(l)));                  // [E]
            }
        }
        return new PeftAdapter(model, config, state, biases);
    }

    /** The frozen correction bias [E] written after layer {@code l}'s trained router; throws when it was not given. */
    INDArray routerBias(int l) {
        INDArray bias = routerBiases.get(l);
        if (bias == null) {
            throw new IllegalStateException("a trained " + AdapterConfig.typeName(model) + " router is written with "
                    + "its e_score_correction_bias: call withRouterBiases(checkpoint) first");
        }
        return bias;
    }

    /**
     * An adapter from a stacked trainable state; throws naming the first missing or unexpected key, or the first
     * tensor whose dtype or shape disagrees with the model and config. The arrays are kept, not copied.
     */
    public static PeftAdapter of(ModelConfig model, AdapterConfig config, Map<String, INDArray> state) {
        Map<String, long[]> expected = expectedState(model, config);
        for (String key : state.keySet()) {
            if (!expected.containsKey(key)) {
                throw new AdapterFormatException("trainable state: unexpected key " + key + " (expected the "
                        + expected.size() + " stacked LoRA" + (config.trainRouter() ? "/router" : "") + " tensors of "
                        + config.targets() + ", e.g. " + expected.keySet().iterator().next() + ")");
            }
        }
        LinkedHashMap<String, INDArray> ordered = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            INDArray array = state.get(e.getKey());
            if (array == null) {
                throw new AdapterFormatException("trainable state: missing " + e.getKey());
            }
            if (array.dataType() != DataType.FLOAT) {
                throw new AdapterFormatException("trainable state: " + e.getKey() + " is " + array.dataType()
                        + ", expected FLOAT");
            }
            if (!Arrays.equals(array.shape(), e.getValue())) {
                throw new AdapterFormatException("trainable state: " + e.getKey() + " has shape "
                        + Arrays.toString(array.shape()) + ", expected " + Arrays.toString(e.getValue()));
            }
            ordered.put(e.getKey(), array);
        }
        return new PeftAdapter(model, config, ordered);
    }

    /** Stacked key → shape, in the contract's order, for this model and adapter config. */
    public static LinkedHashMap<String, long[]> expectedState(ModelConfig model, AdapterConfig config) {
        config.checkFits(model);
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        LinkedHashMap<String, long[]> out = new LinkedHashMap<>();
        long e = model.num_experts;
        long r = config.r();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (!model.isMoeLayer(l)) {
                continue;
            }
            for (Projection p : config.targets()) {
                out.put(AdapterKeys.loraA(layout, l, p), new long[] {e, r, inFeatures(model, p)});
                out.put(AdapterKeys.loraB(layout, l, p), new long[] {e, outFeatures(model, p), r});
            }
            if (config.sharedExpert()) {
                for (Projection p : config.targets()) {
                    out.put(AdapterKeys.sharedLoraA(layout, l, p), new long[] {1, r, sharedIn(model, p)});
                    out.put(AdapterKeys.sharedLoraB(layout, l, p), new long[] {1, sharedOut(model, p), r});
                }
            }
            if (config.trainRouter()) {
                out.put(layout.routerGate(l), new long[] {e, model.hidden_size});
                if (model.clamped_experts) {
                    out.put(layout.routerBias(l), new long[] {e});                         // gpt-oss
                }
            }
        }
        return out;
    }

    static long inFeatures(ModelConfig model, Projection p) {
        return p == Projection.DOWN ? model.expert_intermediate_size : model.hidden_size;
    }

    static long outFeatures(ModelConfig model, Projection p) {
        return p == Projection.DOWN ? model.hidden_size : model.expert_intermediate_size;
    }

    static long sharedIn(ModelConfig model, Projection p) {
        return p == Projection.DOWN ? model.shared_expert_intermediate_size : model.hidden_size;
    }

    static long sharedOut(ModelConfig model, Projection p) {
        return p == Projection.DOWN ? model.hidden_size : model.shared_expert_intermediate_size;
    }

    public ModelConfig model() {
        return model;
    }

    public AdapterConfig config() {
        return config;
    }

    /** The stacked trainable state (not a copy). */
    public LinkedHashMap<String, INDArray> state() {
        return state;
    }

    /** Writes the per-expert PEFT adapter: as {@link #write(Path, Configuration, ExpertLayout)} with PER_EXPERT. */
    public void write(Path dir, Configuration conf) {
        write(dir, conf, ExpertLayout.PER_EXPERT);
    }

    /**
     * Writes {@code dir/adapter_model.safetensors} then {@code dir/adapter_config.json}, each atomically, with one
     * LoRA per expert and projection (PER_EXPERT, what vLLM and PEFT both load) or on transformers 5's fused expert
     * parameters (FUSED: {@link FusedAdapterExport}, at rank 2r when gate or up is targeted).
     */
    public void write(Path dir, Configuration conf, ExpertLayout format) {
        checkFormat(config, format);
        // gpt-oss has no per-expert modules in transformers: PEFT adapts its fused parameters only
        boolean fused = format == ExpertLayout.FUSED || model.clamped_experts;
        FusedAdapterExport export = fused ? new FusedAdapterExport(this) : null;
        try {
            FileSystem fs = dir.getFileSystem(conf);
            fs.mkdirs(dir);
            SafeTensorsWriter.write(fs, new Path(dir, WEIGHTS_FILE), fused ? export.tensors() : peftTensors(),
                    Map.of("format", "pt"));
            String json = fused ? export.configJson() : config.toJson(model);
            AtomicFile.write(fs, new Path(dir, CONFIG_FILE), json.getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new UncheckedIOException("writing adapter folder " + dir + ": " + e.getMessage(), e);
        }
    }

    /**
     * Throws when {@code format} cannot hold an adapter of {@code config}: PEFT's fused-expert adapter
     * (target_parameters) has no place here for the shared expert's LoRA.
     */
    public static void checkFormat(AdapterConfig config, ExpertLayout format) {
        if (format == ExpertLayout.FUSED && config.sharedExpert()) {
            throw new IllegalArgumentException("--adapter-format fused with LoRA on the shared expert is not supported: "
                    + "use --adapter-format per-expert");
        }
    }

    /** Per-expert views of the stacked tensors under PEFT's keys: by layer, expert, projection, A before B. */
    private List<NamedTensor> peftTensors() {
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        List<NamedTensor> out = new ArrayList<>();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (!model.isMoeLayer(l)) {
                continue;
            }
            for (int e = 0; e < model.num_experts; e++) {
                for (Projection p : config.targets()) {
                    out.add(new NamedTensor.Floats(AdapterKeys.peftA(layout, l, e, p),
                            state.get(AdapterKeys.loraA(layout, l, p)).slice(e)));
                    out.add(new NamedTensor.Floats(AdapterKeys.peftB(layout, l, e, p),
                            state.get(AdapterKeys.loraB(layout, l, p)).slice(e)));
                }
            }
            if (config.sharedExpert()) {
                for (Projection p : config.targets()) {
                    out.add(new NamedTensor.Floats(AdapterKeys.peftSharedA(layout, l, p),
                            state.get(AdapterKeys.sharedLoraA(layout, l, p)).slice(0)));            // [R, in]
                    out.add(new NamedTensor.Floats(AdapterKeys.peftSharedB(layout, l, p),
                            state.get(AdapterKeys.sharedLoraB(layout, l, p)).slice(0)));            // [out, R]
                }
            }
            if (config.trainRouter()) {
                out.add(new NamedTensor.Floats(AdapterKeys.peftRouter(l), state.get(layout.routerGate(l))));
            }
            if (writesRouterBiases()) {
                out.add(new NamedTensor.Floats(AdapterKeys.peftRouterBias(l), routerBias(l)));
            }
        }
        return out;
    }

    /**
     * Reads a PEFT adapter folder for {@code model}: adapter_config.json is checked by {@link AdapterConfig#parse},
     * then every tensor of adapter_model.safetensors must be a per-expert LoRA matrix (or router) that config
     * implies, with its shape, and none may be missing. Errors are one line naming the file and key.
     */
    public static PeftAdapter read(Path dir, Configuration conf, ModelConfig model) {
        return read(dir, conf, model, null);
    }

    /**
     * As {@link #read(Path, Configuration, ModelConfig)}; {@code peftVersion} (--peft-version, null: none) names the
     * PEFT release that saved a fused-expert adapter, in place of adapter_config.json's peft_version, to settle which
     * shape generation it has. A per-expert adapter's tensors do not depend on it.
     */
    public static PeftAdapter read(Path dir, Configuration conf, ModelConfig model, String peftVersion) {
        FileSystem fs;
        Path configFile = new Path(dir, CONFIG_FILE);
        AdapterConfig config;
        FusedAdapterFormat fused;
        try {
            fs = dir.getFileSystem(conf);
            if (!fs.exists(dir) || !fs.getFileStatus(dir).isDirectory()) {
                throw new AdapterFormatException("adapter folder not found: " + dir);
            }
            if (!fs.exists(configFile)) {
                throw new AdapterFormatException("no " + CONFIG_FILE + " in adapter folder " + dir);
            }
            if (!fs.exists(new Path(dir, WEIGHTS_FILE))) {
                throw new AdapterFormatException("no " + WEIGHTS_FILE + " in adapter folder " + dir);
            }
            // Hadoop's local file system keeps a .crc beside what it wrote; a hand-edited config must still read
            FileSystem configFs = fs instanceof ChecksumFileSystem checksummed ? checksummed.getRawFileSystem() : fs;
            try (FSDataInputStream in = configFs.open(configFile)) {
                String text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
                config = AdapterConfig.parse(text, configFile.toString(), model);
                fused = FusedAdapterFormat.parse(text, configFile.toString());
                if (fused != null && peftVersion != null) {
                    fused = fused.withPeftVersion(peftVersion);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading adapter folder " + dir + ": " + e.getMessage(), e);
        }
        try (LocalFiles local = LocalFiles.of(fs, dir);
             SafeTensorsFile file = SafeTensorsFile.open(local.get(WEIGHTS_FILE))) {
            Path weights = new Path(dir, WEIGHTS_FILE);
            if (fused == null && model.clamped_experts) {
                throw new AdapterFormatException(configFile + ": a gpt_oss adapter targets its fused expert parameters "
                        + "(target_parameters mlp.experts.gate_up_proj / down_proj); gpt_oss has no per-expert modules");
            }
            return new PeftAdapter(model, config, fused != null
                    ? new FusedAdapterTensors(model, config, fused, weights).stack(file)
                    : new AdapterTensors(model, config, weights).stack(file));
        }
    }
}
