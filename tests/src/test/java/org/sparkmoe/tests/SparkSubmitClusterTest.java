package org.sparkmoe.tests;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The deployment path of a real cluster: a standalone Master and two Workers (separate JVMs) whose classpath is only
 * the jars a Spark distribution ships (assembly/target/spark-classpath.txt), and a driver JVM running Spark's own
 * {@code org.apache.spark.deploy.SparkSubmit} on those jars with assembly/target/sparkmoe-assembly.jar as the
 * application, exactly as {@code spark-submit --class org.sparkmoe.driver.SparkMoe sparkmoe-assembly.jar} does in
 * client mode. eval and train give what the embedded local[2] run gives: the same report, the same adapter bytes.
 */
class SparkSubmitClusterTest {
    private static final long SUBMIT_TIMEOUT_S = 300;
    private static final String MAIN_CLASS = "org.sparkmoe.driver.SparkMoe";

    private static Path assembly;
    private static List<String> sparkJars;
    private static StandaloneCluster cluster;
    private static Path data;

    @BeforeAll
    static void startClusterOfSparkJarsOnly(@TempDir Path dir) throws IOException {
        Path root = Fixtures.root();
        assembly = root.resolve("assembly/target/sparkmoe-assembly.jar");
        Path classPathFile = root.resolve("assembly/target/spark-classpath.txt");
        assertTrue(Files.isRegularFile(assembly) && Files.isRegularFile(classPathFile),
                "the assembly is built first (mvn package builds module assembly before tests)");
        sparkJars = Arrays.stream(Files.readString(classPathFile).trim().split(File.pathSeparator)).toList();
        assertTrue(sparkJars.stream().anyMatch(j -> Path.of(j).getFileName().toString().startsWith("spark-core_")));
        assertFalse(sparkJars.stream().anyMatch(j -> j.contains("sparkmoe") || j.contains("nd4j")),
                "the cluster's jars know nothing of SparkMoE");
        data = dir.resolve("sysadmin-excerpt.txt");
        Files.writeString(data, Files.readString(Fixtures.corpus("sysadmin.txt")).substring(0, 24_000));
        cluster = StandaloneCluster.start(2, "1536m", sparkJars);
    }

    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            cluster.close();
        }
    }

    @Test
    void evalThroughSparkSubmitEqualsEmbedded(@TempDir Path dir) throws Exception {
        List<String> eval = List.of("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.toString(),
                "--split", "all", "--window", "64", "--batch-windows", "4", "--partitions", "2");
        Path embedded = dir.resolve("embedded.json");
        Path submitted = dir.resolve("submitted.json");
        CliRun local = CliRun.sparkmoe(concat(eval, "--master", "local[2]", "--out", embedded.toString()));
        assertEquals(0, local.exitCode(), local.err());

        String log = submit(cluster.logDir().resolve("eval-submit.log"), concat(eval, "--out", submitted.toString()));
        assertTrue(log.contains("eval: wrote"), log);
        assertEquals(Files.readString(embedded), Files.readString(submitted));
        for (int w = 0; w < 2; w++) {
            try (Stream<Path> files = Files.walk(cluster.logDir().resolve("worker-" + w))) {
                assertTrue(files.anyMatch(f -> f.getFileName().toString().equals(assembly.getFileName().toString())),
                        "worker-" + w + "'s executor fetched the assembly from the driver");
            }
        }
    }

    @Test
    void trainThroughSparkSubmitEqualsEmbedded(@TempDir Path dir) throws Exception {
        List<String> train = List.of("train", "--model", Fixtures.tinyModel().toString(), "--data", data.toString(),
                "--window", "32", "--batch-windows", "2", "--steps", "4", "--averaging-frequency", "2",
                "--rank", "4", "--alpha", "8", "--targets", "w1,w3", "--train-router", "--seed", "7",
                "--partitions", "2");
        Path embedded = dir.resolve("embedded");
        Path submitted = dir.resolve("submitted");
        CliRun local = CliRun.sparkmoe(concat(train, "--master", "local[2]", "--out", embedded.toString()));
        assertEquals(0, local.exitCode(), local.err());

        String log = submit(cluster.logDir().resolve("train-submit.log"), concat(train, "--out", submitted.toString()));
        assertTrue(log.contains("train: round 2/2"), log);
        for (String file : List.of("adapter/adapter_model.safetensors", "adapter/adapter_config.json")) {
            byte[] expected = Files.readAllBytes(embedded.resolve(file));
            assertTrue(expected.length > 0, file);
            assertArrayEquals(expected, Files.readAllBytes(submitted.resolve(file)), file);
        }
    }

    /**
     * Runs {@code args} as spark-submit would in client mode: a JVM on the Spark jars alone running SparkSubmit with
     * the assembly as the application jar, the launcher's JVM flags on the driver and the executors, conf/'s
     * standalone spark-defaults and log4j2 settings, one 1-core executor per Worker. Returns the driver's output;
     * fails unless it exits 0.
     */
    private static String submit(Path log, List<String> args) throws Exception {
        Path root = Fixtures.root();
        List<String> flags = StandaloneCluster.jvmFlags();
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.add("-Xmx1g");
        command.addAll(flags);
        command.add("-Dlog4j2.configurationFile=" + root.resolve("conf/log4j2.properties"));
        command.add("-cp");
        command.add(String.join(File.pathSeparator, sparkJars));
        command.addAll(List.of("org.apache.spark.deploy.SparkSubmit",
                "--master", cluster.masterUrl(), "--deploy-mode", "client", "--class", MAIN_CLASS,
                "--properties-file", root.resolve("conf/spark-defaults.standalone.conf").toString(),
                "--conf", "spark.executor.extraJavaOptions=" + String.join(" ", flags),
                "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=2",
                "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
                "--conf", "spark.ui.enabled=false",
                assembly.toString()));
        command.addAll(args);
        ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile());
        builder.environment().put("SPARK_HOME", cluster.sparkHome().toString());
        builder.environment().put("SPARK_SCALA_VERSION", "2.12");
        Process driver = builder.start();
        if (!driver.waitFor(SUBMIT_TIMEOUT_S, TimeUnit.SECONDS)) {
            driver.destroyForcibly();
            throw new AssertionError("spark-submit ran over " + SUBMIT_TIMEOUT_S + " s: " + Files.readString(log));
        }
        String output = Files.readString(log);
        assertEquals(0, driver.exitValue(), output);
        return output;
    }

    private static List<String> concat(List<String> args, String... more) {
        List<String> all = new ArrayList<>(args);
        all.addAll(List.of(more));
        return all;
    }
}
