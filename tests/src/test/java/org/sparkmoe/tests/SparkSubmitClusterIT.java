package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
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
 * client mode. eval and train give what the embedded local[2] run gives: the same report, the same adapter bytes;
 * eval with the model and corpus shipped by spark-submit itself (--archives, --files), train reading them from a
 * path every node shares.
 */
class SparkSubmitClusterIT {
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
                "the assembly is packaged first (mvn verify packages module assembly before these tests)");
        sparkJars = Arrays.stream(Files.readString(classPathFile).trim().split(File.pathSeparator)).toList();
        assertTrue(sparkJars.stream().anyMatch(j -> Path.of(j).getFileName().toString().startsWith("spark-core_")));
        assertFalse(sparkJars.stream().anyMatch(j -> Path.of(j).getFileName().toString().matches("(sparkmoe|nd4j).*")),
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

    /**
     * eval with the model and the corpus shipped by spark-submit ({@code --archives model.tgz#model}, {@code --files})
     * and named through {@code /proc/self/cwd}: one path that every JVM resolves in its own working directory, where
     * Spark (or YARN) unpacked them. The report equals the embedded run's on the repository's files.
     */
    @Test
    void evalOfShippedModelAndCorpusEqualsEmbedded(@TempDir Path dir) throws Exception {
        List<String> eval = List.of("eval", "--split", "all", "--window", "64", "--batch-windows", "4",
                "--partitions", "2");
        Path embedded = dir.resolve("embedded.json");
        Path submitted = dir.resolve("submitted.json");
        CliRun local = CliRun.sparkmoe(concat(eval, "--model", Fixtures.tinyModel().toString(), "--data",
                data.toString(), "--master", "local[2]", "--out", embedded.toString()));
        assertEquals(0, local.exitCode(), local.err());

        Path modelArchive = dir.resolve("model.tgz");
        Process tar = new ProcessBuilder("tar", "-czf", modelArchive.toString(), "-C", Fixtures.tinyModel().toString(),
                ".").inheritIO().start();
        assertEquals(0, tar.waitFor());
        // the driver runs where the user launched it (client mode): its working directory holds the same two
        Path launchDir = Files.createDirectories(dir.resolve("launch"));
        Files.createSymbolicLink(launchDir.resolve("model"), Fixtures.tinyModel());
        Files.copy(data, launchDir.resolve(data.getFileName()));
        String log = submit(launchDir, cluster.logDir().resolve("eval-submit.log"),
                List.of("--archives", modelArchive + "#model", "--files", data.toString()),
                concat(eval, "--model", "file:///proc/self/cwd/model",
                        "--data", "file:///proc/self/cwd/" + data.getFileName(), "--out", submitted.toString()));
        assertTrue(log.contains("eval: wrote"), log);

        ObjectMapper json = new ObjectMapper();
        ObjectNode expected = (ObjectNode) json.readTree(embedded.toFile());
        ObjectNode actual = (ObjectNode) json.readTree(submitted.toFile());
        assertEquals("file:/proc/self/cwd/model", actual.remove("model").asText());
        expected.remove("model");
        assertEquals(expected, actual);
        for (int w = 0; w < 2; w++) {
            try (Stream<Path> files = Files.walk(cluster.logDir().resolve("worker-" + w))) {
                List<String> names = files.map(f -> f.getFileName().toString()).toList();
                assertTrue(names.containsAll(List.of(assembly.getFileName().toString(), "model.safetensors",
                        data.getFileName().toString())), "worker-" + w + "'s executor fetched the assembly, "
                        + "unpacked the model and fetched the corpus: " + names);
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

        String log = submit(dir, cluster.logDir().resolve("train-submit.log"), List.of(),
                concat(train, "--out", submitted.toString()));
        assertTrue(log.contains("train: round 2/2"), log);
        for (String file : List.of("adapter/adapter_model.safetensors", "adapter/adapter_config.json")) {
            byte[] expected = Files.readAllBytes(embedded.resolve(file));
            assertTrue(expected.length > 0, file);
            assertArrayEquals(expected, Files.readAllBytes(submitted.resolve(file)), file);
        }
    }

    /**
     * Runs {@code args} as spark-submit would in client mode from {@code workDir}: a JVM on the Spark jars alone
     * running SparkSubmit with the assembly as the application jar, the launcher's JVM flags on the driver and the
     * executors, conf/'s standalone spark-defaults and log4j2 settings, one 1-core executor per Worker, and
     * {@code submitOptions}. Returns the driver's output; fails unless it exits 0.
     */
    private static String submit(Path workDir, Path log, List<String> submitOptions, List<String> args)
            throws Exception {
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
                "--conf", "spark.ui.enabled=false"));
        command.addAll(submitOptions);
        command.add(assembly.toString());
        command.addAll(args);
        ProcessBuilder builder = new ProcessBuilder(command).directory(workDir.toFile()).redirectErrorStream(true)
                .redirectOutput(log.toFile());
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
