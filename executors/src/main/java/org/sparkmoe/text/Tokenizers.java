package org.sparkmoe.text;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/** The tokenizer of a model folder ({@code DIR/tokenizer.json}), loaded once per JVM and shared by every task. */
public final class Tokenizers {
    private static final Map<String, BpeTokenizer> LOADED = new ConcurrentHashMap<>();

    private Tokenizers() {
    }

    /** Reads {@code DIR/tokenizer.json} through the Hadoop FileSystem API. */
    public static BpeTokenizer load(Path modelDir, Configuration conf) {
        Path file = new Path(modelDir, "tokenizer.json");
        String json;
        try {
            json = TextFiles.readUtf8(file, conf);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("model folder " + modelDir + " has no usable tokenizer.json: "
                    + e.getMessage(), e);
        }
        return BpeTokenizer.fromJson(json, file.toString());
    }

    /**
     * The model's tokenizer (cached), checked on the driver before any task uses it: a BPE tokenizer.json that
     * parses, whose every id is below {@code vocabSize} (config.json's vocab_size, the rows of the embedding).
     */
    public static BpeTokenizer checked(String modelUri, int vocabSize) {
        BpeTokenizer tokenizer = cached(modelUri);
        if (tokenizer.vocabSize() > vocabSize) {
            throw new IllegalArgumentException("tokenizer file " + new Path(modelUri, "tokenizer.json") + " has ids up to "
                    + (tokenizer.vocabSize() - 1) + "; expected every id below config.json's vocab_size " + vocabSize);
        }
        return tokenizer;
    }

    public static BpeTokenizer cached(String modelUri) {
        return LOADED.computeIfAbsent(modelUri, u -> load(new Path(u), new Configuration()));
    }
}
