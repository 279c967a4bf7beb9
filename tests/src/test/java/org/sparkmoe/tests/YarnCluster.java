package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.api.records.ApplicationId;
import org.apache.hadoop.yarn.api.records.ApplicationReport;
import org.apache.hadoop.yarn.api.records.YarnApplicationState;
import org.apache.hadoop.yarn.client.api.YarnClient;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;
import org.apache.logging.log4j.Level;
import org.apache.logging.log4j.core.config.Configurator;

import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * HDFS and YARN in this JVM for tests: a MiniDFSCluster (one DataNode) and a MiniYARNCluster with two NodeManagers of
 * 4 GiB and 4 vcores each (containers from 256 MiB, no memory checks), and what a client host of that cluster has:
 * <ul>
 *   <li>{@code hadoop-conf/}, a HADOOP_CONF_DIR naming the NameNode ({@code fs.defaultFS}) and the ResourceManager;</li>
 *   <li>{@code spark-home/}, a Spark installation: {@code jars/} links the jars a Spark distribution ships
 *       (assembly/target/spark-classpath.txt, spark-yarn among them) and {@code bin/spark-submit} runs Spark's own
 *       launcher ({@code org.apache.spark.launcher.Main}) and then the command it builds, as the distribution's
 *       spark-submit and spark-class scripts do (the driver options, HADOOP_CONF_DIR on the driver's classpath).</li>
 * </ul>
 * The containers run Spark from that installation ({@code spark.yarn.jars=local:.../jars/*}, as on a cluster where
 * Spark is installed on every node) and SparkMoE from the assembly put on HDFS once
 * ({@code SPARKMOE_ASSEMBLY=hdfs:///apps/sparkmoe/sparkmoe-assembly.jar}, world-readable, so each NodeManager
 * localizes it once into YARN's public cache): nothing but the model and the corpus is uploaded per job. Their JVMs
 * are children of this one (the NodeManagers' default container executor), so a test can find and kill them. Files
 * live under {@code tests/target/yarn-cluster/<time>/}; the NodeManagers' container logs under
 * {@code tests/target/test/data/<name>/}.
 */
final class YarnCluster implements AutoCloseable {
    private static final String EXECUTOR_MAIN = "org.apache.spark.executor.YarnCoarseGrainedExecutorBackend";
    private static final long START_TIMEOUT_MS = 60_000;
    /** Where the assembly goes on HDFS, as the docs tell a user to put it. */
    static final String ASSEMBLY = "/apps/sparkmoe/sparkmoe-assembly.jar";

    /**
     * The distribution's spark-submit and spark-class, shortened: Spark's launcher prints its messages, a NUL line,
     * then the command NUL-separated; the last field is the launcher's exit code.
     */
    private static final String SPARK_SUBMIT = """
            #!/usr/bin/env bash
            set -uo pipefail
            build_command() {
              "$JAVA_HOME/bin/java" -Xmx128m -cp "$SPARK_HOME/jars/*" org.apache.spark.launcher.Main \\
                org.apache.spark.deploy.SparkSubmit "$@"
              printf '%d\\0' $?
            }
            CMD=()
            DELIM=$'\\n'
            STARTED=""
            while IFS= read -d "$DELIM" -r arg; do
              if [ -n "$STARTED" ]; then
                CMD+=("$arg")
              elif [ -z "$arg" ]; then
                DELIM=''
                STARTED=1
              else
                echo "$arg"
              fi
            done < <(build_command "$@")
            LAST=$((${#CMD[@]} - 1))
            [ "$LAST" -ge 0 ] && [ "${CMD[$LAST]}" = 0 ] || { echo "spark-submit: the launcher failed" >&2; exit 1; }
            exec "${CMD[@]:0:$LAST}"
            """;

    private final Path dir;
    private final MiniDFSCluster dfs;
    private final MiniYARNCluster yarn;
    private final YarnClient client;
    private final Path hadoopConf;
    private final Path sparkHome;

    private YarnCluster(Path dir, MiniDFSCluster dfs, MiniYARNCluster yarn, YarnClient client, Path hadoopConf,
                        Path sparkHome) {
        this.dir = dir;
        this.dfs = dfs;
        this.yarn = yarn;
        this.client = client;
        this.hadoopConf = hadoopConf;
        this.sparkHome = sparkHome;
    }

    /**
     * Starts HDFS and YARN, puts {@code assembly} on HDFS at {@link #ASSEMBLY} and lays out the client's
     * HADOOP_CONF_DIR and SPARK_HOME with {@code sparkJars}.
     */
    static YarnCluster start(Path dir, List<String> sparkJars, Path assembly) throws Exception {
        quietDaemonLogs();
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, dir.resolve("hdfs").toString());
        conf.setInt("dfs.replication", 1);
        MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf).numDataNodes(1).build();
        MiniYARNCluster yarn = null;
        try {
            dfs.waitActive();
            String defaultFs = dfs.getFileSystem().getUri().toString();
            YarnConfiguration yarnConf = new YarnConfiguration(conf);
            yarnConf.set("fs.defaultFS", defaultFs);
            yarnConf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 256);
            // the ResourceManager hands out containers on NodeManager heartbeats: every 250 ms, not every second
            yarnConf.setLong(YarnConfiguration.RM_NM_HEARTBEAT_INTERVAL_MS, 250);
            yarnConf.setInt(YarnConfiguration.NM_PMEM_MB, 4096);
            yarnConf.setInt(YarnConfiguration.NM_VCORES, 4);
            yarnConf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
            yarnConf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
            // a full build disk must not mark the NodeManagers unhealthy (the default limit is 90 %)
            yarnConf.setFloat(YarnConfiguration.NM_MAX_PER_DISK_UTILIZATION_PERCENTAGE, 100f);
            // FIFO: one queue, no share of the cluster reserved for ApplicationMasters (the capacity scheduler also
            // wants a capacity-scheduler.xml, which the minicluster jar does not carry)
            yarnConf.set(YarnConfiguration.RM_SCHEDULER,
                    "org.apache.hadoop.yarn.server.resourcemanager.scheduler.fifo.FifoScheduler");
            // the containers' java: {{JAVA_HOME}}/bin/java, as a NodeManager's environment gives it on a cluster
            yarnConf.set(YarnConfiguration.NM_ADMIN_USER_ENV, "JAVA_HOME=" + System.getProperty("java.home"));
            yarn = new MiniYARNCluster("yarn-cluster-it", 2, 1, 1);
            yarn.init(yarnConf);
            yarn.start();
            if (!yarn.waitForNodeManagersToConnect(START_TIMEOUT_MS)) {
                throw new IllegalStateException("2 NodeManagers did not register in " + START_TIMEOUT_MS / 1000 + " s");
            }
            // -put keeps the default permissions (rw-r--r--, folders rwxr-xr-x): world-readable, YARN's public cache
            dfs.getFileSystem().copyFromLocalFile(new org.apache.hadoop.fs.Path(assembly.toUri()),
                    new org.apache.hadoop.fs.Path(ASSEMBLY));
            Path hadoopConf = writeClientConf(dir.resolve("hadoop-conf"), defaultFs, yarn.getConfig());
            Path sparkHome = sparkHome(dir.resolve("spark-home"), sparkJars);
            YarnClient client = YarnClient.createYarnClient();
            client.init(yarn.getConfig());
            client.start();
            System.err.println("yarn cluster up: " + defaultFs + ", ResourceManager "
                    + yarn.getConfig().get(YarnConfiguration.RM_ADDRESS) + ", files in " + dir);
            return new YarnCluster(dir, dfs, yarn, client, hadoopConf, sparkHome);
        } catch (Exception | Error e) {
            if (yarn != null) {
                yarn.stop();
            }
            dfs.shutdown();
            throw e;
        }
    }

    /**
     * The daemons' INFO lines (an audit line per NameNode call, every heartbeat) would bury the tests' output. A
     * SparkContext started in this JVM for the first time resets the levels (Spark's default log4j profile): call
     * this again after it.
     */
    static void quietDaemonLogs() {
        Configurator.setLevel("org.apache.hadoop", Level.WARN);
        Configurator.setLevel("FSNamesystem.audit", Level.WARN);
    }

    FileSystem fs() throws IOException {
        return dfs.getFileSystem();
    }

    /** hdfs://HOST:PORT{@code path}: what {@code hdfs://path} names on a client of this cluster. */
    String hdfs(String path) {
        return dfs.getURI().toString() + path;
    }

    Path dir() {
        return dir;
    }

    /**
     * The environment a user's shell on a client host has: SPARK_HOME, HADOOP_CONF_DIR, JAVA_HOME, the assembly on
     * HDFS (SPARKMOE_ASSEMBLY), and the Spark jars on every node ({@code spark.yarn.jars=local:...}, through
     * SPARK_SUBMIT_OPTS, so it does not replace the command's --properties-file). SPARK_SUBMIT_OPTS also gives
     * spark-submit's own JVM (the driver in client mode, the submitting client in cluster mode) the serial collector
     * and the client compiler only: it starts in less CPU time, and it computes nothing but the driver's sums.
     */
    Map<String, String> clientEnvironment() {
        return Map.of("SPARK_HOME", sparkHome.toString(), "HADOOP_CONF_DIR", hadoopConf.toString(),
                "SPARK_SCALA_VERSION", "2.12", "JAVA_HOME", System.getProperty("java.home"),
                "SPARKMOE_ASSEMBLY", "hdfs://" + ASSEMBLY,
                "SPARK_SUBMIT_OPTS", "-Dspark.yarn.jars=local:" + sparkHome.resolve("jars") + "/*"
                        + " -XX:+UseSerialGC -XX:TieredStopAtLevel=1");
    }

    /** Process ids of the executor JVMs running in this cluster's containers now (not the shells that start them). */
    List<Long> executorPids() {
        return ProcessHandle.current().descendants()
                .filter(p -> p.info().command().map(c -> c.endsWith("/java")).orElse(false)
                        && p.info().commandLine().map(c -> c.contains(EXECUTOR_MAIN)).orElse(false))
                .map(ProcessHandle::pid).toList();
    }

    /** Kills (SIGKILL) the executor JVM {@code pid}, as a lost container or host would, and waits until it is gone. */
    void killExecutor(long pid) throws Exception {
        ProcessHandle executor = ProcessHandle.of(pid).orElseThrow(() -> new IllegalStateException(
                "executor " + pid + " is not running"));
        executor.destroyForcibly();
        executor.onExit().get(15, TimeUnit.SECONDS);
    }

    /** The one application RUNNING now (the test submits one at a time). */
    ApplicationReport runningApplication() throws Exception {
        List<ApplicationReport> running = client.getApplications(EnumSet.of(YarnApplicationState.RUNNING));
        if (running.size() != 1) {
            throw new IllegalStateException(running.size() + " applications running, expected 1: " + running);
        }
        return running.get(0);
    }

    /** {@code yarn application -kill}: the ResourceManager ends every container of {@code app}. */
    void kill(ApplicationId app) throws Exception {
        client.killApplication(app);
    }

    ApplicationReport report(ApplicationId app) throws Exception {
        return client.getApplicationReport(app);
    }

    /** What the containers of {@code app} wrote to {@code file} (stdout, stderr), every container's in turn. */
    String containerLogs(ApplicationId app, String file) throws IOException {
        StringBuilder logs = new StringBuilder();
        try (Stream<Path> files = Files.walk(yarn.getTestWorkDir().toPath())) {
            for (Path log : files.filter(f -> f.getFileName().toString().equals(file)
                    && f.toString().contains("/" + app + "/")).sorted().toList()) {
                logs.append("==> ").append(log).append('\n').append(Files.readString(log));
            }
        }
        return logs.toString();
    }

    @Override
    public void close() {
        try {
            client.stop();
        } finally {
            try {
                yarn.stop();
            } finally {
                dfs.shutdown();
            }
        }
    }

    /** core-site.xml (the NameNode) and yarn-site.xml (the ResourceManager's addresses) for clients. */
    private static Path writeClientConf(Path confDir, String defaultFs, Configuration yarnConf) throws IOException {
        Files.createDirectories(confDir);
        Configuration core = new Configuration(false);
        core.set("fs.defaultFS", defaultFs);
        core.set("dfs.replication", "1");
        write(core, confDir.resolve("core-site.xml"));
        Configuration site = new Configuration(false);
        for (Map.Entry<String, String> entry : yarnConf) {
            if (entry.getKey().startsWith("yarn.resourcemanager.")) {
                site.set(entry.getKey(), yarnConf.get(entry.getKey()));
            }
        }
        write(site, confDir.resolve("yarn-site.xml"));
        return confDir;
    }

    private static void write(Configuration conf, Path file) throws IOException {
        try (OutputStream out = Files.newOutputStream(file)) {
            conf.writeXml(out);
        }
    }

    /** {@code home/jars/} linking {@code jars}, an empty {@code conf/}, and {@code bin/spark-submit}. */
    private static Path sparkHome(Path home, List<String> jars) throws IOException {
        Path jarDir = Files.createDirectories(home.resolve("jars"));
        Files.createDirectories(home.resolve("conf"));
        for (String entry : jars) {
            Path jar = Path.of(entry);
            Path link = jarDir.resolve(jar.getFileName());
            for (int n = 1; Files.exists(link, LinkOption.NOFOLLOW_LINKS); n++) {
                link = jarDir.resolve(n + "-" + jar.getFileName());
            }
            Files.createSymbolicLink(link, jar.toAbsolutePath());
        }
        Path submit = Files.createDirectories(home.resolve("bin")).resolve("spark-submit");
        Files.writeString(submit, SPARK_SUBMIT);
        Files.setPosixFilePermissions(submit, PosixFilePermissions.fromString("rwxr-xr-x"));
        return home;
    }

    /** The jars of assembly/target/spark-classpath.txt: what a Spark distribution built for YARN ships. */
    static List<String> sparkJars() throws IOException {
        Path file = Fixtures.root().resolve("assembly/target/spark-classpath.txt");
        List<String> jars = new ArrayList<>();
        for (String entry : Files.readString(file).trim().split(File.pathSeparator)) {
            if (entry.endsWith(".jar")) {
                jars.add(entry);
            }
        }
        return jars;
    }
}
