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

    public static BpeTokenizer cached(String modelUri) {
        return LOADED.computeIfAbsent(modelUri, u -> load(new Path(u), new Configuration()));
    }
}
