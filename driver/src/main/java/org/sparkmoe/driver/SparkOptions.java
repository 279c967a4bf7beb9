package org.sparkmoe.driver;

import picocli.CommandLine.Option;

/** Options every Spark job shares. */
public final class SparkOptions {
    @Option(names = "--master", paramLabel = "URL",
            description = "Spark master. Default: the one spark-submit sets, else the embedded local[2].")
    public String master;

    @Option(names = "--partitions", paramLabel = "N",
            description = "Partitions for the work. Default: Spark's default parallelism (executor cores).")
    public Integer partitions;

    public int partitionsOr(int defaultParallelism) {
        if (partitions == null) {
            return defaultParallelism;
        }
        if (partitions < 1) {
            throw new IllegalArgumentException("--partitions must be ≥ 1, got " + partitions);
        }
        return partitions;
    }
}
