package org.sparkmoe.driver;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * The SparkContext every job runs in: the embedded local master unless spark-submit (or --master) says
 * otherwise, Kryo with registration required, and the OpenBLAS settings passed on to executors.
 */
public final class SparkContexts {
    public static final String DEFAULT_MASTER = "local[2]";
    /** The OpenBLAS kernel set and thread counts the driver runs with, passed on to executors. */
    private static final String[] EXECUTOR_ENVIRONMENT = {"OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"};

    /** SparkContexts started by this JVM: tests check that bad input is refused before the first one. */
    private static final AtomicInteger STARTED = new AtomicInteger();

    private SparkContexts() {
    }

    /** How many SparkContexts {@link #start} has started in this JVM. */
    public static int started() {
        return STARTED.get();
    }

    public static SparkConf conf(String appName, String master) {
        SparkConf conf = new SparkConf().setAppName(appName);
        if (master != null) {
            conf.setMaster(master);
        }
        conf.setIfMissing("spark.master", DEFAULT_MASTER)
                .set("spark.serializer", "org.apache.spark.serializer.KryoSerializer")
                .set("spark.kryo.registrationRequired", "true")
                .set("spark.kryo.registrator", SparkMoeKryoRegistrator.class.getName())
                .setIfMissing("spark.kryoserializer.buffer.max", "512m")
                .setIfMissing("spark.ui.showConsoleProgress", "false");
        for (String name : EXECUTOR_ENVIRONMENT) {
            String value = System.getenv(name);
            if (value != null && !value.isEmpty()) {
                conf.setIfMissing("spark.executorEnv." + name, value);
            }
        }
        return conf;
    }

    public static JavaSparkContext start(String appName, String master) {
        STARTED.incrementAndGet();
        JavaSparkContext sc = new JavaSparkContext(conf(appName, master));
        sc.sc().addSparkListener(new ConsoleProgress(System.err));
        return sc;
    }
}
