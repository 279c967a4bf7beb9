package org.sparkmoe.driver;

import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.apache.spark.api.plugin.SparkPlugin;
import org.sparkmoe.kernels.Nd4jLoad;
import org.sparkmoe.kernels.VectorWarmup;

import java.util.Map;

/**
 * A Spark plugin ({@code spark.plugins}) that loads ND4J's native backend ({@link Nd4jLoad}) when an executor JVM
 * starts, before it runs a task (the executor registers its tasks' slots after its plugins' init), and starts the
 * Vector API kernels' warm-up ({@link VectorWarmup}), so the kernels compile while the driver tokenizes and plans
 * instead of while the executor's first tasks wait.
 * {@link SparkContexts#conf} adds it for every master whose executors are JVMs of their own; an embedded driver starts
 * both itself.
 */
public final class ExecutorWarmupPlugin implements SparkPlugin {
    private static volatile boolean initialised;

    @Override
    public DriverPlugin driverPlugin() {
        return null;
    }

    @Override
    public ExecutorPlugin executorPlugin() {
        return new ExecutorPlugin() {
            @Override
            public void init(PluginContext context, Map<String, String> extraConf) {
                Nd4jLoad.now();
                VectorWarmup.start();
                initialised = true;
            }
        };
    }

    /** Whether this JVM is an executor whose plugin started the warm-up. */
    public static boolean initialised() {
        return initialised;
    }
}
