package org.sparkmoe.adapter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFileSystem;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.LocalFiles;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.io.TensorInfo;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.OwnedArrays;

/**
 * A μMoE adapter of a model ({@link MumoeConfig}) and its folder: {@code adapter_config.json} (adapter_type MUMOE)
 * and {@code adapter_model.safetensors} (float32, the tensors named as {@link MumoeConfig} names them, in its
 * order). Applied unmerged: {@link #apply} adds every site's μMoE term to the base model, sharing its weights.
 *
 * @param config what the adapter holds
 * @param state  name → tensor, the names and shapes of {@link MumoeConfig#expectedState}
 */
public record MumoeAdapter(MumoeConfig config, Map<String, INDArray> state) {
    /** The reason a μMoE adapter is refused wherever a LoRA adapter would be merged into the base weights. */
    public static final String NOT_MERGEABLE = "a μMoE adapter cannot be merged into the base weights: its experts' "
            + "mixture weights depend on each token's input, so no single weight matrix equals it (run it unmerged "
            + "with --adapter)";

    /** Whether {@code dir}'s adapter_config.json is a μMoE adapter's (false when there is none: PEFT's reader says so). */
    public static boolean isMumoe(Path dir, Configuration conf) {
        String json = configText(dir, conf, false);
        return json != null && MumoeConfig.isMumoe(json);
    }

    /** The config of the μMoE adapter folder {@code dir} alone (no tensors read); one line naming the file otherwise. */
    public static MumoeConfig readConfig(Path dir, Configuration conf) {
        return MumoeConfig.parse(configText(dir, conf, true), new Path(dir, PeftAdapter.CONFIG_FILE).toString());
    }

    /** The base model with this adapter's terms, sharing the base's weights; the adapted model owns the tensors. */
    public MoeTransformer apply(MoeTransformer base) {
        OwnedArrays owned = new OwnedArrays();
        state.values().forEach(owned::add);
        return base.withTerms(config.terms(base.config(), state), owned);
    }

    /**
     * This adapter with {@code muted}'s experts silenced on {@code model} ({@link org.sparkmoe.mumoe.MumoeForm#muted}:
     * a flat site's expert tensor copied with those experts zero, a hierarchical site's factors widened by the muted
     * experts' subtracted terms, every other tensor shared); throws one line naming the entry that names no site or
     * expert of this adapter. The result is for the forward pass only: a hierarchical site's tensors no longer have
     * {@link MumoeConfig#expectedState}'s shapes, so it is not {@link #write}n.
     */
    public MumoeAdapter muted(MutedExperts muted, ModelConfig model) {
        List<MumoeConfig.Placement> placements = config.placements(model);
        muted.check(placements, config.expertCount());
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>(state);
        for (MumoeConfig.Placement p : placements) {
            int[] experts = muted.at(p.key());
            if (experts.length > 0) {
                Map<String, INDArray> site = new LinkedHashMap<>();
                for (String name : config.form().shapes(p.in(), p.out(), config.expertDims(), config.ranks()).keySet()) {
                    site.put(name, state.get(p.prefix() + name));
                }
                config.form().muted(site, experts, "--mute-experts")
                        .forEach((name, a) -> out.put(p.prefix() + name, a));
            }
        }
        return new MumoeAdapter(config, out);
    }

    /** Writes {@code dir/adapter_model.safetensors} then {@code dir/adapter_config.json}, each atomically. */
    public void write(Path dir, Configuration conf, ModelConfig model, String baseModel) {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        for (String name : config.expectedState(model).keySet()) {
            tensors.put(name, state.get(name));
        }
        try {
            FileSystem fs = dir.getFileSystem(conf);
            fs.mkdirs(dir);
            SafeTensorsWriter.write(fs, new Path(dir, PeftAdapter.WEIGHTS_FILE), tensors, Map.of("format", "pt"));
            AtomicFile.write(fs, new Path(dir, PeftAdapter.CONFIG_FILE),
                    config.toJson(baseModel).getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new UncheckedIOException("writing adapter folder " + dir + ": " + e.getMessage(), e);
        }
    }

    /**
     * Reads a μMoE adapter folder for {@code model}: the config, then every tensor {@link MumoeConfig#expectedState}
     * names, with its shape, and no other. Errors are one line naming the file and key.
     */
    public static MumoeAdapter read(Path dir, Configuration conf, ModelConfig model) {
        Path configFile = new Path(dir, PeftAdapter.CONFIG_FILE);
        MumoeConfig config = MumoeConfig.parse(configText(dir, conf, true), configFile.toString());
        LinkedHashMap<String, long[]> expected;
        try {
            expected = config.expectedState(model);
        } catch (IllegalArgumentException e) {
            throw new AdapterFormatException(configFile + ": " + e.getMessage());
        }
        Path weights = new Path(dir, PeftAdapter.WEIGHTS_FILE);
        try (LocalFiles local = LocalFiles.of(dir.getFileSystem(conf), dir);
             SafeTensorsFile file = SafeTensorsFile.open(local.get(PeftAdapter.WEIGHTS_FILE))) {
            for (String name : file.names()) {
                if (!expected.containsKey(name)) {
                    throw new AdapterFormatException(weights + ": unexpected tensor " + name + " for " + config);
                }
            }
            LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
            for (Map.Entry<String, long[]> e : expected.entrySet()) {
                if (!file.names().contains(e.getKey())) {
                    throw new AdapterFormatException(weights + ": no tensor " + e.getKey() + ", which " + config
                            + " implies");
                }
                TensorInfo info = file.info(e.getKey());
                if (!Arrays.equals(info.shape(), e.getValue())) {
                    throw new AdapterFormatException(weights + ": " + e.getKey() + " has shape "
                            + Arrays.toString(info.shape()) + ", expected " + Arrays.toString(e.getValue()));
                }
                state.put(e.getKey(), file.readFloat(e.getKey()));
            }
            return new MumoeAdapter(config, state);
        } catch (IOException e) {
            throw new UncheckedIOException("reading adapter folder " + dir + ": " + e.getMessage(), e);
        }
    }

    /** adapter_config.json's text; null when absent unless {@code required}. */
    private static String configText(Path dir, Configuration conf, boolean required) {
        Path configFile = new Path(dir, PeftAdapter.CONFIG_FILE);
        try {
            FileSystem fs = dir.getFileSystem(conf);
            if (!fs.exists(configFile)) {
                if (required) {
                    throw new AdapterFormatException("no " + PeftAdapter.CONFIG_FILE + " in adapter folder " + dir);
                }
                return null;
            }
            FileSystem configFs = fs instanceof ChecksumFileSystem checksummed ? checksummed.getRawFileSystem() : fs;
            try (FSDataInputStream in = configFs.open(configFile)) {
                return new String(in.readAllBytes(), StandardCharsets.UTF_8);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading adapter folder " + dir + ": " + e.getMessage(), e);
        }
    }
}
