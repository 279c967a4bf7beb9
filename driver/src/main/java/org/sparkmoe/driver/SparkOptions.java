package org.sparkmoe.driver;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.core.Appender;
import org.apache.logging.log4j.core.LoggerContext;
import org.apache.logging.log4j.core.config.LoggerConfig;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

/** Options every Spark job shares. */
public final class SparkOptions {
    @Option(names = "--master", paramLabel = "URL", converter = MasterConverter.class,
            description = "Spark master. Default: the one spark-submit sets, else the embedded local[2].")
    public String master;

    /** Checks --master's form while picocli parses flags: a URL Spark cannot parse is a usage error (exit 2). */
    static final class MasterConverter implements ITypeConverter<String> {
        @Override
        public String convert(String value) {
            try {
                SparkContexts.requireMasterForm("--master", value);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
            return value.trim();
        }
    }

    @Option(names = "--partitions", paramLabel = "N",
            description = "Partitions for the work. Default: Spark's default parallelism (executor cores).")
    public Integer partitions;

    /**
     * Spark's reports of failed tasks (ERROR Executor "Exception in task", WARN TaskSetManager "Lost task", with
     * the executor's stack trace) go to the log file of conf/log4j2.properties, not the console, so that bad
     * input found inside a task still reaches the user as the one error line; --verbose shows them on the console.
     */
    @Option(names = "--verbose", description = "Also print Spark's reports of failed tasks, with their stack traces, "
            + "on the console (they always go to the log file of conf/log4j2.properties).")
    void verbose(boolean verbose) {
        if (verbose) {
            taskFailuresToConsole();
        }
    }

    /** The loggers conf/log4j2.properties sends to the log file only. */
    static final String[] TASK_FAILURE_LOGGERS = {"org.apache.spark.executor.Executor",
            "org.apache.spark.scheduler.TaskSetManager", "org.apache.spark.scheduler.TaskSchedulerImpl",
            "org.apache.spark.scheduler.DAGScheduler"};

    private static void taskFailuresToConsole() {
        if (!(LogManager.getContext(false) instanceof LoggerContext context)) {
            return; // another logging backend: nothing was routed away from its console
        }
        org.apache.logging.log4j.core.config.Configuration config = context.getConfiguration();
        Appender console = config.getAppender("console");
        if (console == null) {
            return;
        }
        for (String name : TASK_FAILURE_LOGGERS) {
            LoggerConfig logger = config.getLoggerConfig(name);
            if (logger.getName().equals(name) && !logger.getAppenders().containsKey("console")) {
                logger.addAppender(console, null, null);
            }
        }
        context.updateLoggers();
    }

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
