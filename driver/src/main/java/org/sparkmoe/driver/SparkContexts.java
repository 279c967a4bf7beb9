package org.sparkmoe.driver;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.kernels.Nd4jLoad;
import org.sparkmoe.kernels.VectorWarmup;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Pattern;

/**
 * The SparkContext every job runs in: the embedded local master unless spark-submit (or --master) says
 * otherwise, Kryo with registration required, and the OpenBLAS and glibc settings passed on to executors. ND4J's
 * native backend loads before Spark starts ({@link Nd4jLoad}: not beside another thread's native loads), Spark's
 * serializers are used once while it starts ({@link SerializerWarmup}); an embedded context also warms the kernels
 * up then ({@link VectorWarmup}) and the scheduler once it has ({@link SchedulerWarmup}).
 */
public final class SparkContexts {
    public static final String DEFAULT_MASTER = "local[2]";
    /** The smallest heap Spark's memory manager accepts: 1.5 × its 300 MiB reserved memory. */
    static final long SPARK_MIN_HEAP = 450L << 20;
    /** The OpenBLAS kernel set and thread counts and glibc's tunables the driver has, passed on to executors. */
    private static final String[] EXECUTOR_ENVIRONMENT = {"OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS", "GLIBC_TUNABLES"};

    /** SparkContexts started by this JVM: tests check that bad input is refused before the first one. */
    private static final AtomicInteger STARTED = new AtomicInteger();

    private SparkContexts() {
    }

    /** How many SparkContexts {@link #start} has started in this JVM. */
    public static int started() {
        return STARTED.get();
    }

    /** The master URL forms Spark accepts, for messages. */
    public static final String MASTER_FORMS = "local, local[N], local[*], local[N,F], local-cluster[N,C,M], "
            + "spark://HOST:PORT[,HOST:PORT...], yarn, k8s://HOST:PORT, mesos://HOST:PORT";
    private static final Pattern MASTER = Pattern.compile("local|local\\[\\s*([0-9]+|\\*)\\s*(,\\s*[0-9]+\\s*)?]"
            + "|local-cluster\\[\\s*[0-9]+\\s*,\\s*[0-9]+\\s*,\\s*[0-9]+\\s*]"
            + "|spark://[^/,\\s:]+:[0-9]+(,[^/,\\s:]+:[0-9]+)*/?|yarn|k8s://\\S+|mesos://\\S+");
    /** How long the driver waits for a spark:// master to accept a TCP connection before it gives up. */
    static final int CONNECT_TIMEOUT_MS = 3000;

    /** Throws (naming {@code what}, the flag or setting, and the accepted forms) unless Spark would parse the URL. */
    public static void requireMasterForm(String what, String master) {
        if (master == null || !MASTER.matcher(master.trim()).matches()) {
            throw new IllegalArgumentException(what + " '" + master + "' is not a Spark master URL; expected "
                    + MASTER_FORMS);
        }
    }

    /**
     * For a spark:// master, a TCP connection to one of its HOST:PORTs within a few seconds, so that a master that
     * is down or unreachable fails at once (Spark itself retries for about a minute, then ends in a stack trace).
     */
    static void requireReachable(String master) {
        if (!master.startsWith("spark://")) {
            return;
        }
        List<String> failures = new ArrayList<>();
        IOException last = null;
        for (String hostPort : master.substring("spark://".length()).replaceFirst("/$", "").split(",")) {
            int colon = hostPort.lastIndexOf(':');
            String host = hostPort.substring(0, colon);
            int port = Integer.parseInt(hostPort.substring(colon + 1));
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress(host, port), CONNECT_TIMEOUT_MS);
                return;
            } catch (IOException e) {
                last = e;
                failures.add(hostPort + ": " + (e instanceof SocketTimeoutException
                        ? "no answer within " + CONNECT_TIMEOUT_MS / 1000 + " s"
                        : e instanceof UnknownHostException ? "unknown host " + host
                        : e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage()));
            }
        }
        throw new UncheckedIOException("cannot reach the Spark master at " + String.join("; ", failures), last);
    }

    /** Whether {@code master} runs the tasks in the driver's JVM: local, local[N], local[*], local[N,F]. */
    static boolean embedded(String master) {
        return master.equals("local") || master.startsWith("local[");
    }

    public static SparkConf conf(String appName, String master) {
        SparkConf conf = new SparkConf().setAppName(appName);
        if (master != null) {
            conf.setMaster(master);
        }
        conf.setIfMissing("spark.master", DEFAULT_MASTER);
        if (embedded(conf.get("spark.master"))) {
            // in local mode the executor is this JVM: an OutOfMemoryError in a task must fail the job (reported as
            // one line), not System.exit(52) the driver from the executor thread; cluster executors still die on it
            conf.setIfMissing("spark.executor.killOnFatalError.depth", "0");
        } else {
            for (Class<?> plugin : List.of(ExecutorWarmupPlugin.class, TaskGpuPlugin.class)) {
                String plugins = conf.get("spark.plugins", "").trim();
                if (!List.of(plugins.split("\\s*,\\s*")).contains(plugin.getName())) {
                    conf.set("spark.plugins", plugins.isEmpty() ? plugin.getName() : plugins + "," + plugin.getName());
                }
            }
        }
        conf
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

    /**
     * Refuses in one line a driver heap below what Spark's memory manager needs (1.5 × its 300 MiB reserve, unless
     * spark.testing.memory stands in), which Spark would report only after logging a stack trace.
     */
    static void requireHeap(long maxHeapBytes, SparkConf conf) {
        if (!conf.contains("spark.testing.memory") && maxHeapBytes < SPARK_MIN_HEAP) {
            throw new IllegalArgumentException("the driver's heap is " + (maxHeapBytes >> 20) + " MiB; Spark needs at "
                    + "least " + (SPARK_MIN_HEAP >> 20) + " MiB: raise -Xmx (SPARKMOE_JAVA_OPTS in the embedded mode, "
                    + "--driver-memory with spark-submit)");
        }
    }

    public static JavaSparkContext start(String appName, String master) {
        SparkConf conf = conf(appName, master);
        String url = conf.get("spark.master");
        requireMasterForm("spark.master", url);
        requireHeap(Runtime.getRuntime().maxMemory(), conf);
        requireReachable(url);
        STARTED.incrementAndGet();
        boolean runsTasks = embedded(url);     // this JVM runs the tasks
        Nd4jLoad.now();                     // ND4J's native libraries, before any other thread loads one
        SerializerWarmup.start(conf);       // Spark's serializers are used once while Spark starts
        if (runsTasks) {
            VectorWarmup.start();           // the kernels compile while Spark starts
        }
        JavaSparkContext sc = new JavaSparkContext(conf);
        sc.sc().addSparkListener(new ConsoleProgress(System.err));
        if (runsTasks) {
            SchedulerWarmup.start(sc);      // and the scheduler's path warms while the command plans
        }
        return sc;
    }
}
