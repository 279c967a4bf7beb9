package org.sparkmoe.train;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.conf.Configuration;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.MoeTransformer;

/**
 * The repository's tiny fixtures: examples/models/mixtral-tiny (4 layers, D 128, E 8, K 2, V 1024) and
 * tests/src/test/resources/reference/qwen2-moe-tiny (3 layers, layer 1 dense, shared expert, q/k/v biases,
 * norm_topk_prob false, V 64), loaded once per JVM in FLOAT or DOUBLE.
 */
final class TinyModels {
    static final String MIXTRAL = "examples/models/mixtral-tiny";
    static final String QWEN = "tests/src/test/resources/reference/qwen2-moe-tiny";
    private static final Map<String, MoeTransformer> LOADED = new ConcurrentHashMap<>();

    private TinyModels() {
    }

    static MoeTransformer load(String relative, DataType dataType) {
        return LOADED.computeIfAbsent(relative + "@" + dataType, k -> {
            org.apache.hadoop.fs.Path dir = new org.apache.hadoop.fs.Path(repoRoot().resolve(relative).toUri());
            Configuration conf = new Configuration();
            try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
                return ModelLoader.load(ModelFolder.readConfig(dir, conf), checkpoint, new Nd4jGroupedGemm(), dataType);
            }
        });
    }

    /** B windows of S token ids drawn uniformly from the vocabulary with a seeded generator. */
    static int[][] windows(MoeTransformer model, int batch, int seq, long seed) {
        Random rnd = new Random(seed);
        int[][] w = new int[batch][seq];
        for (int[] row : w) {
            for (int s = 0; s < seq; s++) {
                row[s] = rnd.nextInt(model.config().vocab_size);
            }
        }
        return w;
    }

    /** The first ancestor of the working directory that holds examples/models/mixtral-tiny. */
    private static Path repoRoot() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve(MIXTRAL))) {
                return p;
            }
        }
        throw new IllegalStateException("no ancestor of " + Path.of("").toAbsolutePath() + " holds " + MIXTRAL);
    }
}
