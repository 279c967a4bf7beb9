package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.yarn.api.records.ApplicationId;
import org.apache.hadoop.yarn.api.records.YarnApplicationState;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * SparkMoE on YARN for real: HDFS and YARN in this JVM ({@link YarnCluster}: a MiniDFSCluster, a MiniYARNCluster with
 * two NodeManagers), a Spark installation of the jars a distribution ships, and the user's commands run as the docs
 * give them, each through Spark's {@code SparkSubmit} in a child JVM with the assembly jar:
 * <ul>
 *   <li>client mode through the launcher ({@code deploy/bin/sparkmoe} with SPARK_HOME and
 *       {@code SPARKMOE_SUBMIT_OPTS="--properties-file conf/spark-defaults.yarn.conf ..."}): eval of a model and a
 *       corpus on {@code hdfs://}, its report written to {@code hdfs://}, byte for byte the embedded run's;</li>
 *   <li>cluster mode through {@code deploy/yarn/submit-cluster.sh} (the model shipped with --archives, the corpus with
 *       --files): train with its checkpoints on {@code hdfs://}, one executor container killed mid-run, and the
 *       adapter byte for byte the embedded run's; and a run whose application is killed ({@code yarn application
 *       -kill}) resumed with --resume from its HDFS checkpoint, again to the same bytes.</li>
 * </ul>
 * The only settings the commands get beyond the docs' are the containers (this cluster's NodeManagers have 4 GiB
 * each, the conf file asks for 8 GiB executors; one executor of two cores where the scenario does not need two
 * executors; the serial collector, which starts in less CPU time on this 2-core machine; no driver web UI) through
 * SPARKMOE_SUBMIT_OPTS. The assembly is on HDFS once for all of them (SPARKMOE_ASSEMBLY, as the docs suggest).
 */
class YarnClusterIT {
    private static final long SUBMIT_TIMEOUT_S = 480;
    private static final ObjectMapper JSON = new ObjectMapper();
    /**
     * Containers that fit the NodeManagers: 1 GiB heaps, ND4J's buffers in the overhead, the serial collector; no web
     * UI on the driver.
     */
    private static final String SMALL_CONTAINERS = " --conf spark.ui.enabled=false --conf spark.executor.memory=1g"
            + " --conf spark.executor.memoryOverhead=512m --conf spark.driver.memory=1g"
            + " --conf spark.driver.memoryOverhead=512m --conf spark.executor.defaultJavaOptions=-XX:+UseSerialGC"
            + " --conf spark.driver.defaultJavaOptions=-XX:+UseSerialGC";
    /** One executor JVM with both task slots: a scenario that loses no executor needs no second one. */
    private static final String ONE_EXECUTOR = "--conf spark.executor.instances=1 --conf spark.executor.cores=2"
            + SMALL_CONTAINERS;
    /** Two executors of one core each: one is killed, the other goes on. */
    private static final String TWO_EXECUTORS = "--conf spark.executor.instances=2 --conf spark.executor.cores=1"
            + SMALL_CONTAINERS;
    /** 4 rounds of 2 steps on 2 partitions, w1 and w3 and the routers, a checkpoint every round. */
    private static final List<String> TRAIN = List.of("--window", "32", "--batch-windows", "2", "--steps", "8",
            "--averaging-frequency", "2", "--rank", "4", "--alpha", "8", "--targets", "w1,w3", "--train-router",
            "--seed", "7", "--partitions", "2", "--checkpoint-every", "1");
    private static final String ADAPTER = "adapter/adapter_model.safetensors";
    private static final String ADAPTER_CONFIG = "adapter/adapter_config.json";

    private static YarnCluster cluster;
    private static Path root;
    private static Path data;
    private static Path embeddedTrain;

    /** Starts HDFS and YARN while the embedded reference run trains (their start is mostly waiting). */
    @BeforeAll
    static void startYarnAndTrainEmbedded(@TempDir Path dir) throws Exception {
        root = Fixtures.root();
        Path assembly = root.resolve("assembly/target/sparkmoe-assembly.jar");
        assertTrue(Files.isRegularFile(assembly),
                "the assembly is packaged first (mvn verify packages module assembly before these tests)");
        Path clusterDir = root.resolve("tests/target/yarn-cluster")
                .resolve(LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss-SSS")));
        CompletableFuture<YarnCluster> starting = CompletableFuture.supplyAsync(() -> {
            try {
                return YarnCluster.start(Files.createDirectories(clusterDir), YarnCluster.sparkJars(), assembly);
            } catch (Exception e) {
                throw new CompletionException(e);
            }
        });
        data = Fixtures.sysadminExcerpt(dir);
        embeddedTrain = dir.resolve("embedded-train");
        CliRun local = CliRun.sparkmoe(concat(List.of("train", "--model", Fixtures.tinyModel().toString(),
                "--data", data.toString(), "--master", "local[2]", "--out", embeddedTrain.toString()), TRAIN));
        cluster = starting.join();
        YarnCluster.quietDaemonLogs();
        assertEquals(0, local.exitCode(), local.err());
        FileSystem fs = cluster.fs();
        fs.copyFromLocalFile(new org.apache.hadoop.fs.Path(Fixtures.tinyModel().toUri()),
                new org.apache.hadoop.fs.Path("/models/mixtral-tiny"));
        fs.copyFromLocalFile(new org.apache.hadoop.fs.Path(data.toUri()),
                new org.apache.hadoop.fs.Path("/text/" + data.getFileName()));
    }

    @AfterAll
    static void stopYarn() {
        if (cluster != null) {
            cluster.close();
        }
    }

    /**
     * The docs' client-mode command: the launcher with SPARK_HOME, HADOOP_CONF_DIR and the YARN conf file, model,
     * corpus and report on {@code hdfs:///} (the NameNode from HADOOP_CONF_DIR). The report's bytes equal those of
     * the embedded local[2] run on the same HDFS files, which runs here while YARN runs the submitted one.
     */
    @Test
    void clientModeEvalOnHdfsEqualsEmbedded() throws Exception {
        List<String> eval = List.of("eval", "--split", "test", "--window", "64", "--batch-windows", "4",
                "--partitions", "2");
        Process submitted = start("eval-client", List.of(root.resolve("deploy/bin/sparkmoe").toString()),
                concat(eval, "--model", "hdfs:///models/mixtral-tiny", "--data", "hdfs:///text/" + data.getFileName(),
                        "--out", "hdfs:///reports/submitted.json"),
                "--properties-file " + root.resolve("conf/spark-defaults.yarn.conf") + " " + ONE_EXECUTOR
                        + " --conf spark.yarn.am.extraJavaOptions=-XX:+UseSerialGC"); // client mode's own AM JVM
        CliRun local = CliRun.sparkmoe(concat(eval, "--model", cluster.hdfs("/models/mixtral-tiny"),
                "--data", cluster.hdfs("/text/" + data.getFileName()), "--master", "local[2]",
                "--out", cluster.hdfs("/reports/embedded.json")));
        assertEquals(0, local.exitCode(), local.err());

        String log = finish(submitted, "eval-client");
        assertTrue(log.contains("eval: wrote"), log);
        assertTrue(log.contains("memory plan: eval per executor JVM of yarn"), "ran on YARN: " + log);

        byte[] expected = hdfsBytes("/reports/embedded.json");
        assertEquals(cluster.hdfs("/models/mixtral-tiny"), JSON.readTree(expected).get("model").asText(),
                "both runs name the model by the same qualified URI");
        assertArrayEquals(expected, hdfsBytes("/reports/submitted.json"));
    }

    /**
     * Cluster mode: submit-cluster.sh ships the local model folder and corpus; checkpoints and the adapter go to
     * {@code hdfs:///}. Once round 1 is checkpointed one executor container is killed (SIGKILL, as a lost node does);
     * YARN and Spark replace it and rerun its tasks, and the adapter's bytes and every round's loss equal the
     * embedded run's.
     */
    @Test
    void clusterModeTrainSurvivesALostExecutor() throws Exception {
        String out = "/runs/lost-executor";
        Process submit = startSubmitCluster("train-lost-executor", out, List.of(), TWO_EXECUTORS);
        awaitCheckpoint(submit, "train-lost-executor", out);
        List<Long> executors = cluster.executorPids();
        assertEquals(2, executors.size(), "two executor containers run: " + executors);
        cluster.killExecutor(executors.get(0));
        String latest = hdfsString(out + "/checkpoints/latest");
        assertNotEquals("round-000004", latest, "the run was still in its rounds when the executor died");

        String log = finish(submit, "train-lost-executor");
        assertTrue(log.contains("final status: SUCCEEDED"), log);
        assertSameTraining(out);
    }

    /**
     * Cluster mode again, the application killed through the ResourceManager once round 1 is checkpointed on HDFS;
     * the same command with --resume picks up the checkpoint and ends with the embedded run's adapter and losses.
     */
    @Test
    void killedApplicationResumesFromItsHdfsCheckpoint() throws Exception {
        String out = "/runs/resumed";
        Process submit = startSubmitCluster("train-killed", out, List.of(), ONE_EXECUTOR);
        awaitCheckpoint(submit, "train-killed", out);
        ApplicationId app = cluster.runningApplication().getApplicationId();
        cluster.kill(app);
        String killedLog = finish(submit, "train-killed", false);
        assertEquals(YarnApplicationState.KILLED, cluster.report(app).getYarnApplicationState(), killedLog);
        assertTrue(cluster.fs().exists(new org.apache.hadoop.fs.Path(out + "/checkpoints/latest")));
        assertFalse(cluster.fs().exists(new org.apache.hadoop.fs.Path(out + "/" + ADAPTER)),
                "killed before it wrote the adapter");

        Process resume = startSubmitCluster("train-resume", out, List.of("--resume"), ONE_EXECUTOR);
        String log = finish(resume, "train-resume");
        Matcher id = Pattern.compile("application_\\d+_\\d+").matcher(log);
        assertTrue(id.find(), log);
        String driverLog = cluster.containerLogs(ApplicationId.fromString(id.group()), "stderr");
        assertTrue(driverLog.contains("resuming at round"), driverLog);
        assertSameTraining(out);
    }

    /**
     * The adapter under hdfs {@code out} has the embedded run's bytes, its adapter_config.json too (the base model
     * named by the folder given to submit-cluster.sh, as the embedded run names its --model), and its train log the
     * same losses.
     */
    private static void assertSameTraining(String out) throws IOException {
        assertArrayEquals(Files.readAllBytes(embeddedTrain.resolve(ADAPTER)), hdfsBytes(out + "/" + ADAPTER));
        assertEquals(Files.readString(embeddedTrain.resolve(ADAPTER_CONFIG)),
                new String(hdfsBytes(out + "/" + ADAPTER_CONFIG), StandardCharsets.UTF_8));
        List<String> expected = Files.readAllLines(embeddedTrain.resolve("train-log.jsonl"));
        List<String> actual = new String(hdfsBytes(out + "/train-log.jsonl"), StandardCharsets.UTF_8).lines().toList();
        assertEquals(expected.size(), actual.size(), String.join("\n", actual));
        for (int i = 0; i < expected.size(); i++) {
            assertEquals(JSON.readTree(expected.get(i)).get("loss"), JSON.readTree(actual.get(i)).get("loss"));
        }
    }

    /**
     * submit-cluster.sh with the tiny model and the corpus: train to hdfs {@code out} in {@code containers}, started,
     * not awaited.
     */
    private static Process startSubmitCluster(String name, String out, List<String> more, String containers)
            throws IOException {
        List<String> args = new ArrayList<>(List.of("train"));
        args.addAll(TRAIN);
        args.addAll(List.of("--out", "hdfs://" + out));
        args.addAll(more);
        return start(name, List.of(root.resolve("deploy/yarn/submit-cluster.sh").toString(),
                Fixtures.tinyModel().toString(), data.toString()), args, containers);
    }

    /** Waits until the run {@code name} writing to hdfs {@code out} has checkpointed its first round. */
    private static void awaitCheckpoint(Process submit, String name, String out) throws Exception {
        org.apache.hadoop.fs.Path latest = new org.apache.hadoop.fs.Path(out + "/checkpoints/latest");
        long deadline = System.currentTimeMillis() + SUBMIT_TIMEOUT_S * 1000;
        while (!cluster.fs().exists(latest)) {
            if (!submit.isAlive() || System.currentTimeMillis() > deadline) {
                throw new AssertionError(name + " has no checkpoint " + (submit.isAlive() ? "after " + SUBMIT_TIMEOUT_S
                        + " s" : "and ended with " + submit.exitValue()) + ": " + Files.readString(log(name)));
            }
            Thread.sleep(200);
        }
    }

    /** Runs bash {@code script args} from the repository root as a user of the cluster would, output to a log. */
    private static Process start(String name, List<String> script, List<String> args, String submitOptions)
            throws IOException {
        List<String> command = new ArrayList<>(List.of("bash"));
        command.addAll(script);
        command.addAll(args);
        ProcessBuilder builder = new ProcessBuilder(command).directory(root.toFile()).redirectErrorStream(true)
                .redirectOutput(log(name).toFile());
        Map<String, String> env = builder.environment();
        env.putAll(cluster.clientEnvironment());
        env.put("SPARKMOE_SUBMIT_OPTS", submitOptions);
        return builder.start();
    }

    private static String finish(Process process, String name) throws Exception {
        return finish(process, name, true);
    }

    /** Waits for {@code process} and returns its output; with {@code mustSucceed}, fails unless it exits 0. */
    private static String finish(Process process, String name, boolean mustSucceed) throws Exception {
        Path log = log(name);
        if (!process.waitFor(SUBMIT_TIMEOUT_S, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            throw new AssertionError(name + " ran over " + SUBMIT_TIMEOUT_S + " s: " + Files.readString(log));
        }
        String output = Files.readString(log);
        if (mustSucceed) {
            assertEquals(0, process.exitValue(), output);
        } else {
            assertNotEquals(0, process.exitValue(), output);
        }
        return output;
    }

    private static Path log(String name) {
        return cluster.dir().resolve(name + ".log");
    }

    private static byte[] hdfsBytes(String path) throws IOException {
        try (var in = cluster.fs().open(new org.apache.hadoop.fs.Path(path))) {
            return in.readAllBytes();
        }
    }

    private static String hdfsString(String path) throws IOException {
        return new String(hdfsBytes(path), StandardCharsets.UTF_8).trim();
    }

    private static List<String> concat(List<String> args, String... more) {
        return concat(args, List.of(more));
    }

    private static List<String> concat(List<String> args, List<String> more) {
        List<String> all = new ArrayList<>(args);
        all.addAll(more);
        return all;
    }
}
