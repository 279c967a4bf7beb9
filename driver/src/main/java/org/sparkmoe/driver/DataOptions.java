package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.text.TextSplit;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

import java.util.List;

/**
 * {@code --data PATH,... --split S}, shared by eval, train and calibrate; each command passes its default split
 * (the field's initial value is picocli's default).
 */
public final class DataOptions {
    @Option(names = "--data", required = true, split = ",", paramLabel = "PATH",
            description = "UTF-8 text files, comma-separated or repeated.")
    public List<String> files;

    @Option(names = "--split", paramLabel = "train|valid|test|all", converter = SplitConverter.class,
            description = "Part of each file, by code points: first 90%% train, next 5%% valid, last 5%% test. "
                    + "Default: ${DEFAULT-VALUE}.")
    public TextSplit split;

    public DataOptions() {
        this("test");
    }

    public DataOptions(String defaultSplit) {
        this.split = TextSplit.parse(defaultSplit);
    }

    /** Parses --split while picocli parses flags, so that a bad value is a usage error (exit 2), like a bad number. */
    public static final class SplitConverter implements ITypeConverter<TextSplit> {
        @Override
        public TextSplit convert(String value) {
            try {
                return TextSplit.parse(value);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    /**
     * The files as fully qualified URIs, each checked on the driver to be a non-empty, readable regular file of
     * UTF-8 text; an empty name (--data "" or "a,,b") is refused naming --data.
     */
    public List<String> uris(Configuration conf) {
        PlanChecks.requireData(files);
        List<String> uris = files.stream().map(p -> Paths.qualify(p, conf)).toList();
        uris.forEach(f -> Paths.requireTextFile(f, conf));
        return uris;
    }

    public TextSplit textSplit() {
        return split;
    }
}
