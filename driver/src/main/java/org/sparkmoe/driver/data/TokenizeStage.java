package org.sparkmoe.driver.data;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.storage.StorageLevel;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.IntStream;

/**
 * The first stage of every text job: one task per file reads it through the Hadoop FileSystem API, takes the
 * split and tokenizes it with the model's tokenizer.json. The result is persisted; callers unpersist it. Inputs of
 * at most {@link #DRIVER_BYTES} in all are tokenized on the driver instead, with the same code, and handed to the
 * next stage as a parallelized collection (one partition per file, as the stage's): a Spark job's scheduling,
 * serialized persist and collect cost more than tokenizing a few megabytes, and the scoring stage cannot start
 * before the tokens are there. The driver encodes each file in pieces on all its cores. A command may start that
 * work before its SparkContext ({@link #startEarly}), so that it runs while Spark starts.
 */
public final class TokenizeStage {
    /** Files totalling at most this many bytes are tokenized on the driver (a few seconds' work at most). */
    static final long DRIVER_BYTES = 16L << 20;

    /** Driver tokenizations started by {@link #startEarly}, each taken by the first {@link #run} of its inputs. */
    private static final Map<Inputs, CompletableFuture<List<TokenizedFile>>> EARLY = new ConcurrentHashMap<>();

    private TokenizeStage() {
    }

    private record Inputs(String model, List<String> data, TextSplit split) {
    }

    /**
     * Starts tokenizing the inputs on the driver in a background thread now, when they are small enough for the
     * driver ({@link #DRIVER_BYTES}); {@link #run} with the same model, data and split then takes the result, or
     * meets the same error it would have met itself. Called before the command starts Spark, whose start it
     * overlaps.
     */
    public static void startEarly(String model, List<String> data, TextSplit split, Configuration conf) {
        if (totalBytes(data, conf) > DRIVER_BYTES) {
            return;
        }
        EARLY.computeIfAbsent(new Inputs(model, List.copyOf(data), split), in -> CompletableFuture.supplyAsync(
                () -> tokenizeOnDriver(model, data, split), runnable -> {
                    Thread thread = new Thread(runnable, "sparkmoe-early-tokenize");
                    thread.setDaemon(true);
                    thread.start();
                }));
    }

    /** How many early tokenizations no {@link #run} has taken yet; for tests. */
    static int earlyPending() {
        return EARLY.size();
    }

    /** Every file tokenized on the driver, on all its cores. */
    private static List<TokenizedFile> tokenizeOnDriver(String model, List<String> data, TextSplit split) {
        int cores = Runtime.getRuntime().availableProcessors();     // the driver's: no task of the job runs yet
        return IntStream.range(0, data.size()).mapToObj(file -> tokenize(model, data.get(file), split, file, cores))
                .toList();
    }

    /** The result of {@link #startEarly} for these inputs, waited for (null when none was started). */
    private static List<TokenizedFile> takeEarly(String model, List<String> data, TextSplit split) {
        CompletableFuture<List<TokenizedFile>> early = EARLY.remove(new Inputs(model, List.copyOf(data), split));
        if (early == null) {
            return null;
        }
        try {
            return early.join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException cause) {
                throw cause;
            }
            if (e.getCause() instanceof Error cause) {
                throw cause;
            }
            throw e;
        }
    }

    /**
     * @param job    the job's name, for the Spark UI and progress lines
     * @param model  model folder URI (its tokenizer.json is used)
     * @param data   text file URIs
     * @param window tokens per window; every file's split must hold at least one
     */
    public static Tokenized run(JavaSparkContext sc, String job, String model, List<String> data, TextSplit split,
                                int window) {
        sc.setJobDescription(job + ": tokenize " + data.size() + " files (" + split + " split)");
        List<Integer> fileIndices = IntStream.range(0, data.size()).boxed().toList();
        JavaRDD<TokenizedFile> files;
        List<Integer> counts;
        List<TokenizedFile> onDriver = takeEarly(model, data, split);
        if (onDriver == null && totalBytes(data, sc.hadoopConfiguration()) <= DRIVER_BYTES) {
            onDriver = tokenizeOnDriver(model, data, split);
        }
        if (onDriver != null) {
            files = sc.parallelize(onDriver, onDriver.size());
            counts = onDriver.stream().map(t -> t.tokens.length).toList();
        } else {
            files = sc.parallelize(fileIndices, fileIndices.size())
                    .map(file -> tokenize(model, data.get(file), split, file, 1))
                    .persist(StorageLevel.MEMORY_AND_DISK_SER());
            counts = files.map(t -> t.tokens.length).collect();
        }
        for (int f = 0; f < counts.size(); f++) {
            if (counts.get(f) < window) {
                files.unpersist(false);
                throw new IllegalArgumentException(data.get(f) + ": the " + split + " split has " + counts.get(f)
                        + " tokens, fewer than one window of " + window);
            }
        }
        return new Tokenized(files, counts, onDriver);
    }

    /**
     * The tokenized files and each file's token count, in --data order; {@code onDriver} holds the files too when
     * they were tokenized on the driver (null when a stage did it), so a job can cut its work there.
     */
    public record Tokenized(JavaRDD<TokenizedFile> files, List<Integer> tokenCounts, List<TokenizedFile> onDriver) {
        /** Windows of {@code window} tokens per file (the remainder dropped). */
        public long[] windowCounts(int window) {
            return tokenCounts.stream().mapToLong(c -> c / window).toArray();
        }
    }

    /** The files' sizes added up; a file that cannot be listed is left to {@link TextFiles#readUtf8} to name. */
    private static long totalBytes(List<String> data, Configuration conf) {
        long total = 0;
        for (String file : data) {
            Path path = new Path(file);
            try {
                total += path.getFileSystem(conf).getFileStatus(path).getLen();
            } catch (IOException e) {
                return Long.MAX_VALUE;
            }
        }
        return total;
    }

    /** One file's split tokenized, on {@code threads} threads (1 in a task, which shares its executor's cores). */
    private static TokenizedFile tokenize(String model, String file, TextSplit split, int index, int threads) {
        String text = TextFiles.readUtf8(new Path(file), new Configuration());
        return new TokenizedFile(index, Tokenizers.cached(model).encode(split.apply(text), threads));
    }
}
