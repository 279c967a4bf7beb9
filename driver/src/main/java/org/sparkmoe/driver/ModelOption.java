package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import picocli.CommandLine.Option;

/** {@code --model DIR}, shared by every command that reads a model (demo has its own, with a default). */
public final class ModelOption {
    @Option(names = "--model", required = true, paramLabel = "DIR",
            description = "Hugging Face model folder (config.json, *.safetensors, tokenizer.json).")
    public String dir;

    /** The folder as a fully qualified URI. */
    public String uri(Configuration conf) {
        return Paths.qualify(dir, conf);
    }
}
