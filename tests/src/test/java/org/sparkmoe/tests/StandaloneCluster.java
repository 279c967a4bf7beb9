package org.sparkmoe.tests;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.kernels.Nd4jLoad;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.HttpURLConnection;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A real Spark standalone cluster on localhost for tests: one Master and N Workers, each a separate JVM started
 * from the test classpath (or from a Spark distribution's jars alone, for spark-submit), every Worker offering 1 core; the Workers launch executor JVMs
 * (CoarseGrainedExecutorBackend) when an application connects. What it takes (see docs/stack.md):
 * <ul>
 *   <li>a SPARK_HOME-like folder whose {@code jars/} links every jar of the test classpath, and
 *       SPARK_SCALA_VERSION=2.12 in the Workers' environment (executor launch fails without either);</li>
 *   <li>the classpath's directories (our modules' classes) on {@code spark.executor.extraClassPath};</li>
 *   <li>the flags of conf/jvm.properties on the daemons and on {@code spark.executor.extraJavaOptions} (the
 *       executors need {@code --add-modules jdk.incubator.vector} beside Spark's own list);</li>
 *   <li>OPENBLAS_CORETYPE and the thread counts in the Workers' environment and, through
 *       {@link SparkContexts#conf}, on {@code spark.executorEnv.*}.</li>
 * </ul>
 * Ports are picked free at start; start() returns once the Master's JSON page lists every Worker alive. Logs
 * (daemons' stdout/stderr, executors' under {@code worker-N/app-*}) are kept under
 * {@code tests/target/standalone-cluster/<time>/}. {@link #close()} stops executors, Workers and Master by their
 * process ids, forcibly after a timeout.
 */
final class StandaloneCluster implements AutoCloseable {
    private static final long START_TIMEOUT_MS = 90_000;
    private static final long STOP_TIMEOUT_MS = 15_000;
    private static final String EXECUTOR_MAIN = "org.apache.spark.executor.CoarseGrainedExecutorBackend";
    private static final String[] PASSED_ENVIRONMENT = {"OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"};

    private final Path dir;
    private final String executorClassPath;
    private final List<Process> workers = new ArrayList<>();
    private final Thread shutdownHook = new Thread(this::stopAll, "standalone-cluster-stop");
    private Process master;
    private String masterUrl;
    private int masterWebPort;
    private Path sparkHome;

    private StandaloneCluster(Path dir, String executorClassPath) {
        this.dir = dir;
        this.executorClassPath = executorClassPath;
    }

    /**
     * Starts a Master and {@code workerCount} one-core Workers offering {@code workerMemory} (e.g. "1536m") each, all
     * on the test classpath; the drivers are the test's own SparkContexts ({@link #conf}).
     */
    static StandaloneCluster start(int workerCount, String workerMemory) {
        return start(workerCount, workerMemory, testClassPath(), false);
    }

    /**
     * As {@link #start(int, String)}, every Worker also offering one pretend GPU to Spark's resource scheduler: Worker
     * w's discovery script lists the address {@code w + 1} (so no task is on device 0 by accident). Nothing computes
     * on it; applications that ask for {@code spark.executor.resource.gpu.amount} 1 get their executors placed and
     * their tasks given that address.
     */
    static StandaloneCluster startWithPretendGpus(int workerCount, String workerMemory) {
        return start(workerCount, workerMemory, testClassPath(), true);
    }

    /**
     * Starts a Master and {@code workerCount} one-core Workers whose classpath, and SPARK_HOME's {@code jars/}, is
     * {@code classPath} and nothing else: with a Spark distribution's jars, a cluster that knows nothing of SparkMoE,
     * for applications that bring their own jar through spark-submit.
     */
    static StandaloneCluster start(int workerCount, String workerMemory, List<String> classPath) {
        return start(workerCount, workerMemory, classPath, false);
    }

    private static StandaloneCluster start(int workerCount, String workerMemory, List<String> classPath,
                                           boolean pretendGpus) {
        Path dir = Fixtures.root().resolve("tests/target/standalone-cluster")
                .resolve(LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss-SSS")));
        StandaloneCluster cluster = new StandaloneCluster(dir, String.join(File.pathSeparator,
                classPath.stream().filter(p -> Files.isDirectory(Path.of(p))).toList()));
        Runtime.getRuntime().addShutdownHook(cluster.shutdownHook);
        try {
            cluster.sparkHome = sparkHome(dir, classPath);
            int port = freePort();
            cluster.masterWebPort = freePort();
            cluster.masterUrl = "spark://127.0.0.1:" + port;
            cluster.master = cluster.launch("master", cluster.sparkHome, classPath, List.of(), List.of(
                    "org.apache.spark.deploy.master.Master",
                    "--host", "127.0.0.1", "--port", String.valueOf(port), "--webui-port", String.valueOf(cluster.masterWebPort)));
            cluster.awaitMasterAlive();
            for (int w = 0; w < workerCount; w++) {
                Path workDir = Files.createDirectories(dir.resolve("worker-" + w));
                List<String> properties = pretendGpus ? pretendGpu(workDir, String.valueOf(w + 1)) : List.of();
                cluster.workers.add(cluster.launch("worker-" + w, cluster.sparkHome, classPath, properties, List.of(
                        "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", String.valueOf(freePort()),
                        "--webui-port", String.valueOf(freePort()), "--cores", "1", "--memory", workerMemory,
                        "--work-dir", workDir.toString(), cluster.masterUrl)));
            }
            cluster.awaitAliveWorkers(workerCount);
            System.err.println("standalone cluster " + cluster.masterUrl + " up, logs in " + dir);
            return cluster;
        } catch (IOException | RuntimeException e) {
            cluster.close();
            throw new IllegalStateException("starting the standalone cluster failed (logs in " + dir + "): " + e.getMessage(), e);
        }
    }

    String masterUrl() {
        return masterUrl;
    }

    Path logDir() {
        return dir;
    }

    /** The SPARK_HOME-like folder the daemons run with: {@code jars/} links their classpath's jars. */
    Path sparkHome() {
        return sparkHome;
    }

    /**
     * SparkContexts' configuration (Kryo, executor environment) for this cluster: one 1-core executor per Worker
     * with {@code executorMemory} heap, our classes on the executors' classpath and our JVM flags on their command
     * line, the driver on 127.0.0.1. ND4J's backend is loaded first, as {@link SparkContexts#start} does, since the
     * tests make their contexts themselves ({@link Nd4jLoad}: not beside Spark's own loading of native libraries).
     */
    SparkConf conf(String appName, String executorMemory) {
        Nd4jLoad.now();
        String flags;
        try {
            flags = String.join(" ", jvmFlags());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return SparkContexts.conf(appName, masterUrl)
                .set("spark.executor.extraClassPath", executorClassPath)
                .set("spark.executor.extraJavaOptions", flags)
                .set("spark.executor.cores", "1")
                .set("spark.executor.memory", executorMemory)
                .set("spark.cores.max", String.valueOf(workers.size()))
                .set("spark.driver.host", "127.0.0.1")
                .set("spark.driver.bindAddress", "127.0.0.1")
                .set("spark.ui.enabled", "false");
    }

    /** Waits until {@code sc} has an executor on every Worker. */
    void awaitExecutors(JavaSparkContext sc) {
        long deadline = System.currentTimeMillis() + START_TIMEOUT_MS;
        while (sc.sc().getExecutorMemoryStatus().size() < workers.size() + 1) { // the driver counts as one
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException(sc.sc().getExecutorMemoryStatus().size() - 1 + " of " + workers.size()
                        + " executors registered after " + START_TIMEOUT_MS / 1000 + " s (logs in " + dir + ")");
            }
            sleep(200);
        }
    }

    /** Process ids of the executor JVMs currently running under Worker {@code worker}. */
    List<Long> executorPids(int worker) {
        return workers.get(worker).toHandle().descendants()
                .filter(p -> p.info().commandLine().map(c -> c.contains(EXECUTOR_MAIN)).orElse(false))
                .map(ProcessHandle::pid).toList();
    }

    /** The Worker whose executor JVM runs as Spark executor {@code executorId} (its {@code --executor-id}). */
    int workerOf(String executorId) {
        String flag = "--executor-id " + executorId + " ";
        for (int w = 0; w < workers.size(); w++) {
            boolean runs = workers.get(w).toHandle().descendants().anyMatch(p -> p.info().commandLine()
                    .map(c -> c.contains(EXECUTOR_MAIN) && (c + " ").contains(flag)).orElse(false));
            if (runs) {
                return w;
            }
        }
        throw new IllegalStateException("no worker runs executor " + executorId + " (logs in " + dir + ")");
    }

    /** Process ids of every executor JVM of the cluster. */
    List<Long> executorPids() {
        List<Long> pids = new ArrayList<>();
        for (int w = 0; w < workers.size(); w++) {
            pids.addAll(executorPids(w));
        }
        return pids;
    }

    /** Every JVM of the cluster now: the Master, the Workers and their executors. */
    List<ProcessHandle> processes() {
        List<ProcessHandle> all = new ArrayList<>();
        all.add(master.toHandle());
        for (Process worker : workers) {
            all.add(worker.toHandle());
            worker.toHandle().descendants().forEach(all::add);
        }
        return all;
    }

    /** Kills (SIGKILL) the executor JVM of Worker {@code worker} and returns its pid; the Worker itself stays up. */
    long killExecutor(int worker) {
        List<Long> pids = executorPids(worker);
        if (pids.size() != 1) {
            throw new IllegalStateException("worker-" + worker + " runs " + pids.size() + " executors, expected 1: " + pids);
        }
        ProcessHandle executor = ProcessHandle.of(pids.get(0)).orElseThrow();
        executor.destroyForcibly();
        try {
            executor.onExit().get(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            throw new IllegalStateException("executor " + pids.get(0) + " did not die", e);
        }
        return pids.get(0);
    }

    @Override
    public void close() {
        stopAll();
        try {
            Runtime.getRuntime().removeShutdownHook(shutdownHook);
        } catch (IllegalStateException shuttingDown) {
            // the JVM is exiting and the hook is running or has run
        }
    }

    /** Executors first (so Workers do not relaunch them), then Workers, then the Master. */
    private synchronized void stopAll() {
        for (Process worker : workers) {
            worker.toHandle().descendants().forEach(StandaloneCluster::stop);
        }
        workers.forEach(w -> stop(w.toHandle()));
        if (master != null) {
            stop(master.toHandle());
        }
    }

    private static void stop(ProcessHandle process) {
        if (!process.isAlive()) {
            return;
        }
        process.destroy();
        try {
            process.onExit().get(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            process.destroyForcibly();
        }
    }

    /** A Worker's system properties offering one GPU, {@code address}, listed by a discovery script in {@code dir}. */
    private static List<String> pretendGpu(Path dir, String address) throws IOException {
        Path script = dir.resolve("gpu-discovery.sh");
        Files.writeString(script, "#!/bin/sh\necho '{\"name\": \"gpu\", \"addresses\": [\"" + address + "\"]}'\n");
        if (!script.toFile().setExecutable(true)) {
            throw new IOException("cannot make " + script + " executable");
        }
        return List.of("-Dspark.worker.resource.gpu.amount=1", "-Dspark.worker.resource.gpu.discoveryScript=" + script);
    }

    private Process launch(String name, Path sparkHome, List<String> classPath, List<String> properties,
                           List<String> mainAndArgs) throws IOException {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.add("-Xmx256m");
        command.addAll(jvmFlags());
        command.addAll(properties);
        command.add("-cp");
        command.add(String.join(File.pathSeparator, classPath));
        command.addAll(mainAndArgs);
        ProcessBuilder builder = new ProcessBuilder(command)
                .redirectErrorStream(true)
                .redirectOutput(dir.resolve(name + ".log").toFile());
        Map<String, String> env = builder.environment();
        env.put("SPARK_HOME", sparkHome.toString());
        env.put("SPARK_SCALA_VERSION", "2.12");
        env.put("JAVA_HOME", System.getProperty("java.home"));
        env.put("SPARK_LOCAL_IP", "127.0.0.1");
        for (String variable : PASSED_ENVIRONMENT) {
            String value = System.getenv(variable);
            if (value != null) {
                env.put(variable, value);
            }
        }
        return builder.start();
    }

    /**
     * Waits until the Master's JSON page says ALIVE: Workers that register while it is still electing itself
     * leader are answered "standby" and retry only 5 to 15 s later.
     */
    private void awaitMasterAlive() {
        Pattern status = Pattern.compile("\"status\"\\s*:\\s*\"ALIVE\"");
        awaitMasterJson("the master to be ALIVE", json -> status.matcher(json).find());
    }

    private void awaitAliveWorkers(int count) {
        Pattern alive = Pattern.compile("\"aliveworkers\"\\s*:\\s*(\\d+)");
        awaitMasterJson(count + " workers alive", json -> {
            Matcher m = alive.matcher(json);
            return m.find() && Integer.parseInt(m.group(1)) == count;
        });
    }

    /** Polls the Master's JSON page until {@code done} holds, failing fast when a daemon exits. */
    private void awaitMasterJson(String what, Predicate<String> done) {
        long deadline = System.currentTimeMillis() + START_TIMEOUT_MS;
        String last = null;
        while (System.currentTimeMillis() < deadline) {
            if (!master.isAlive()) {
                throw new IllegalStateException("the master exited with code " + master.exitValue());
            }
            for (int w = 0; w < workers.size(); w++) {
                if (!workers.get(w).isAlive()) {
                    throw new IllegalStateException("worker-" + w + " exited with code " + workers.get(w).exitValue());
                }
            }
            String json = masterJson();
            if (json != null) {
                last = json;
                if (done.test(json)) {
                    return;
                }
            }
            sleep(250);
        }
        throw new IllegalStateException("no " + what + " after " + START_TIMEOUT_MS / 1000 + " s; last master status: "
                + (last == null ? "none" : last.replaceAll("\\s+", " ")));
    }

    /** The Master's /json status page, or null while it is not up. */
    private String masterJson() {
        try {
            HttpURLConnection http = (HttpURLConnection) URI.create("http://127.0.0.1:" + masterWebPort + "/json")
                    .toURL().openConnection();
            http.setConnectTimeout(1000);
            http.setReadTimeout(2000);
            try (InputStream in = http.getInputStream()) {
                return new String(in.readAllBytes(), StandardCharsets.UTF_8);
            } finally {
                http.disconnect();
            }
        } catch (IOException notYet) {
            return null;
        }
    }

    /** {@code dir/spark-home} with {@code jars/} linking every jar of the classpath and an empty {@code conf/}. */
    private static Path sparkHome(Path dir, List<String> classPath) throws IOException {
        Path home = dir.resolve("spark-home");
        Path jars = Files.createDirectories(home.resolve("jars"));
        Files.createDirectories(home.resolve("conf"));
        for (String entry : classPath) {
            Path jar = Path.of(entry);
            if (!entry.endsWith(".jar") || !Files.isRegularFile(jar)) {
                continue;
            }
            Path link = jars.resolve(jar.getFileName());
            for (int n = 1; Files.exists(link, LinkOption.NOFOLLOW_LINKS); n++) {
                link = jars.resolve(n + "-" + jar.getFileName());
            }
            Files.createSymbolicLink(link, jar.toAbsolutePath());
        }
        return home;
    }

    /** {@code sparkmoe.jvm.flags} of conf/jvm.properties, the project's one list of JVM flags. */
    static List<String> jvmFlags() throws IOException {
        Properties properties = new Properties();
        try (InputStream in = Files.newInputStream(Fixtures.root().resolve("conf/jvm.properties"))) {
            properties.load(in);
        }
        String flags = properties.getProperty("sparkmoe.jvm.flags");
        if (flags == null || flags.isBlank()) {
            throw new IllegalStateException("conf/jvm.properties has no sparkmoe.jvm.flags");
        }
        return Arrays.asList(flags.trim().split("\\s+"));
    }

    /** The test classpath: Surefire's real one (its booter jar only holds a manifest), else java.class.path. */
    private static List<String> testClassPath() {
        String path = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        return Arrays.stream(path.split(File.pathSeparator)).filter(p -> !p.isEmpty()).toList();
    }

    private static int freePort() {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException("finding a free port", e);
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }
}
