package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.surgery.DistillOptions;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LowRankDistillation;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.sparkmoe.tests.FixtureCommands.ok;

/**
 * {@code surgery lowrank --distill-steps} on the layer-sequential pass: the distilled LoRA experts are, bit for bit,
 * what the replaced collect-then-broadcast capture computed — every window's MoE block inputs from the whole-model
 * forward (8 windows per forward pass), concatenated per layer in (file, window) order, then one
 * {@link LowRankDistillation} per layer from the undistilled conversion — for 1, 2 and 3 partitions, with expert
 * groups and checkpoints, and past the Spark limits the replaced capture refused.
 */
class DistillationPassTest {
    private static final Configuration CONF = new Configuration();
    private static final int WINDOW = 128;
    private static final int TOKENS_PER_FILE = 512;
    private static final DistillOptions OPTIONS = new DistillOptions(30, 1e-2, 3, 256, 0.0, 42);

    @TempDir
    static Path tmp;

    private static List<Path> data() {
        return List.of(Fixtures.corpus("sysadmin.txt"), Fixtures.corpus("fortunes.txt"));
    }

    private static Path lowrank(String name, String... more) {
        Path out = tmp.resolve(name);
        List<String> args = new ArrayList<>(List.of("surgery", "lowrank", "--model", Fixtures.tinyModel().toString(),
                "--rank", "8", "--out", out.toString(), "--master", "local[2]"));
        args.addAll(List.of(more));
        ok(args.toArray(String[]::new));
        return out;
    }

    private static Path distilled(String name, String partitions, String... more) {
        List<String> args = new ArrayList<>(List.of("--distill-steps", "30", "--distill-lr", "1e-2",
                "--distill-batch", "256", "--window", String.valueOf(WINDOW), "--distill-tokens",
                String.valueOf(TOKENS_PER_FILE), "--data", data().get(0) + "," + data().get(1),
                "--partitions", partitions));
        args.addAll(List.of(more));
        return lowrank(name, args.toArray(String[]::new));
    }

    /**
     * Partitions 1 (with 2 expert groups and a checkpoint after every layer), 2 (under a Kryo buffer and a result size
     * the replaced capture refused) and 3 give the same model.safetensors, whose LoRA factors are the reference's.
     */
    @Test
    void distilsTheWholeModelsCapturesBitForBitOnAnyPartitioning() throws Exception {
        Path converted = lowrank("converted");
        Path one = distilled("p1", "1", "--expert-groups", "2", "--checkpoint-dir",
                tmp.resolve("checkpoints").toString(), "--checkpoint-every", "1");
        // the replaced capture moved one chunk's inputs of all 4 MoE layers through Kryo, [4, 8·128, 128] floats =
        // 2 MiB, and collected every layer's [1024, 128] floats, 2 MiB: both refused here. The pass moves a chunk's h
        // and norm2(h), 1 MiB, and a layer's LoRA factors, 672 KiB.
        System.setProperty("spark.kryoserializer.buffer.max", "1536k");
        System.setProperty("spark.driver.maxResultSize", "1m");
        Path two;
        try {
            two = distilled("p2", "2");
        } finally {
            System.clearProperty("spark.kryoserializer.buffer.max");
            System.clearProperty("spark.driver.maxResultSize");
        }
        Path three = distilled("p3", "3");
        byte[] bytes = Files.readAllBytes(one.resolve("model.safetensors"));
        assertArrayEquals(bytes, Files.readAllBytes(two.resolve("model.safetensors")), "1 and 2 partitions");
        assertArrayEquals(bytes, Files.readAllBytes(three.resolve("model.safetensors")), "1 and 3 partitions");

        ModelConfig config = ModelFolder.readConfig(hadoop(Fixtures.tinyModel()), CONF);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        int[] layers = CalibrationStats.moeLayerIndices(config);
        List<INDArray> inputs = wholeModelCaptures(config, layers.length);
        try (Checkpoint original = Checkpoint.open(hadoop(Fixtures.tinyModel()), CONF);
             Checkpoint start = Checkpoint.open(hadoop(converted), CONF);
             Checkpoint written = Checkpoint.open(hadoop(two), CONF)) {
            for (int i = 0; i < layers.length; i++) {
                int l = layers[i];
                LinkedHashMap<String, INDArray> lowRank = new LinkedHashMap<>();
                for (Projection p : Projection.values()) {
                    for (String name : List.of(layout.sharedBase(l, p), layout.stackedLoraA(l, p),
                            layout.stackedLoraB(l, p))) {
                        lowRank.put(name, start.readFloat(name));
                    }
                }
                LayerResult expected = LowRankDistillation.distill(FusedExperts.perExpert(original, config), config,
                        l, new LayerResult(lowRank, null, new LinkedHashMap<>()), inputs.get(i), OPTIONS);
                for (Projection p : Projection.values()) {
                    for (String name : List.of(layout.stackedLoraA(l, p), layout.stackedLoraB(l, p))) {
                        INDArray w = written.readFloat(name);
                        assertArrayEquals(expected.tensors().get(name).shape(), w.shape(), name);
                        assertArrayEquals(Flat.floats(expected.tensors().get(name)), Flat.floats(w), name);
                    }
                }
            }
        }
    }

    /**
     * What the replaced capture broadcast: per MoE layer, [T, D] of the whole model's MoE block inputs, each file's
     * first ⌊512/128⌋ windows of its valid split forwarded 8 windows at a time, in (file, window) order.
     */
    private static List<INDArray> wholeModelCaptures(ModelConfig config, int moeLayers) {
        MoeTransformer model = ModelFolder.load(hadoop(Fixtures.tinyModel()), CONF);
        List<List<INDArray>> perLayer = new ArrayList<>();
        for (int i = 0; i < moeLayers; i++) {
            perLayer.add(new ArrayList<>());
        }
        for (Path file : data()) {
            int[] tokens = Tokenizers.cached(Fixtures.tinyModel().toString())
                    .encode(TextSplit.VALID.apply(TextFiles.readUtf8(file.toString())));
            int[][] windows = Windows.cut(tokens, WINDOW);
            int used = Math.min(tokens.length, TOKENS_PER_FILE) / WINDOW;
            for (int at = 0; at < used; at += 8) {
                ForwardOutput out = model.forward(Arrays.copyOfRange(windows, at, Math.min(used, at + 8)),
                        config.num_experts_per_tok, true);
                for (int i = 0; i < moeLayers; i++) {
                    perLayer.get(i).add(out.routerInputs().get(i).dup('c'));                  // [B·S, D]
                }
            }
        }
        return perLayer.stream().map(rows -> Nd4j.concat(0, rows.toArray(INDArray[]::new))).toList(); // [T, D]
    }

    private static org.apache.hadoop.fs.Path hadoop(Path path) {
        return new org.apache.hadoop.fs.Path(path.toUri());
    }
}
