package org.sparkmoe.tests;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The shell scripts of deploy/: what the launcher hands spark-submit, and what the GPU discovery script prints for
 * Spark. Both run with stand-ins (a spark-submit that records its arguments, an nvidia-smi that lists GPUs).
 */
class DeployScriptsIT {

    /** A process's exit code and its stdout and stderr together. */
    private record Run(int exitCode, String output) {
    }

    /** Whether this machine's CPU flags (the launcher reads the first "flags" line) include avx512f. */
    private static boolean cpuHasAvx512() throws IOException {
        Path cpuinfo = Path.of("/proc/cpuinfo");
        return Files.isReadable(cpuinfo) && Files.readAllLines(cpuinfo).stream()
                .filter(line -> line.startsWith("flags")).findFirst()
                .map(line -> (line + " ").contains(" avx512f ")).orElse(false);
    }

    /** Runs {@code command} with this JVM's environment, less CUDA_VISIBLE_DEVICES, plus {@code environment}. */
    private static Run run(List<String> command, Map<String, String> environment) throws Exception {
        ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
        builder.environment().remove("CUDA_VISIBLE_DEVICES");
        builder.environment().remove("SPARK_HOME");                  // embedded mode unless a test names one
        builder.environment().remove("GLIBC_TUNABLES");              // the launchers' default unless a test names one
        builder.environment().putAll(environment);
        Process process = builder.start();
        String output = new String(process.getInputStream().readAllBytes());
        assertTrue(process.waitFor(60, TimeUnit.SECONDS), String.join(" ", command));
        return new Run(process.exitValue(), output);
    }

    private static Path executable(Path file, String script) throws IOException {
        Files.createDirectories(file.getParent());
        Files.writeString(file, script);
        Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rwxr-xr-x"));
        return file;
    }

    @Test
    void launcherSubmitsTheAssemblyWithFlagsAndLogging(@TempDir Path dir) throws Exception {
        Path root = Fixtures.root();
        Path assembly = root.resolve("assembly/target/sparkmoe-assembly.jar");
        assertTrue(Files.isRegularFile(assembly), "the assembly is packaged before these tests (mvn verify)");
        Path sparkHome = dir.resolve("spark");
        Path recorded = dir.resolve("args.txt");
        executable(sparkHome.resolve("bin/spark-submit"),
                "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$ARGS_OUT\"\n");

        Run launcher = run(List.of("bash", root.resolve("deploy/bin/sparkmoe").toString(),
                        "eval", "--model", "m", "--data", "a b.txt", "--out", "r.json"),
                Map.of("SPARK_HOME", sparkHome.toString(), "ARGS_OUT", recorded.toString(),
                        "SPARKMOE_SUBMIT_OPTS", "--master spark://h:7077 --properties-file conf/spark-defaults.standalone.conf",
                        "OPENBLAS_CORETYPE", "Haswell"));
        assertEquals(0, launcher.exitCode(), launcher.output());

        String flags = String.join(" ", StandaloneCluster.jvmFlags());
        List<String> expected = List.of("--class", "org.sparkmoe.driver.SparkMoe",
                "--driver-java-options", flags + " -Dlog4j2.configurationFile=" + root.resolve("conf/log4j2.properties"),
                "--conf", "spark.executor.extraJavaOptions=" + flags,
                "--conf", "spark.executorEnv.OPENBLAS_CORETYPE=Haswell",
                "--conf", "spark.executorEnv.GLIBC_TUNABLES=glibc.malloc.hugetlb=1",
                "--master", "spark://h:7077", "--properties-file", "conf/spark-defaults.standalone.conf",
                assembly.toString(), "eval", "--model", "m", "--data", "a b.txt", "--out", "r.json");
        assertEquals(expected, Files.readAllLines(recorded));
        String note = "OPENBLAS_CORETYPE=Haswell from the environment leaves this CPU's AVX-512 unused";
        assertEquals(cpuHasAvx512(), launcher.output().contains(note),
                "the note on an explicit core type below an AVX-512 CPU's kernels: " + launcher.output());

        String uploaded = "hdfs:///apps/sparkmoe/sparkmoe-assembly.jar";
        Run onHdfs = run(List.of("bash", root.resolve("deploy/bin/sparkmoe").toString(), "eval", "--model", "m"),
                Map.of("SPARK_HOME", sparkHome.toString(), "ARGS_OUT", recorded.toString(),
                        "SPARKMOE_ASSEMBLY", uploaded, "GLIBC_TUNABLES", "glibc.malloc.arena_max=2",
                        "OPENBLAS_CORETYPE", "SkylakeX"));
        assertEquals(0, onHdfs.exitCode(), onHdfs.output());
        assertFalse(onHdfs.output().contains("AVX-512 unused"), "no note for AVX-512 kernels: " + onHdfs.output());
        List<String> args = Files.readAllLines(recorded);
        assertEquals(List.of(uploaded, "eval", "--model", "m"), args.subList(args.size() - 4, args.size()),
                "SPARKMOE_ASSEMBLY is the jar spark-submit gets");
        assertTrue(args.contains("spark.executorEnv.GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
                "the user's glibc settings kept, malloc's huge pages added: " + args);
    }

    /** Embedded mode: the launcher's dry run picks the heap, and the job starts with it and runs. */
    @Test
    void embeddedLauncherRunsEvalWithThePlannedHeap(@TempDir Path dir) throws Exception {
        Path root = Fixtures.root();
        Path report = dir.resolve("report.json");
        Run eval = run(List.of("bash", root.resolve("deploy/bin/sparkmoe").toString(), "eval",
                        "--model", Fixtures.tinyModel().toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(),
                        "--split", "test", "--window", "64", "--batch-windows", "1", "--out", report.toString()),
                Map.of());
        assertEquals(0, eval.exitCode(), eval.output());
        assertTrue(eval.output().contains("memory plan: heap needed 512 MiB (-Xmx512m;"), eval.output());
        assertTrue(Files.readString(report).contains("\"ppl\""), "the report");
    }

    @Test
    void yarnClusterSubmitShipsTheModelFolderAndCorpus(@TempDir Path dir) throws Exception {
        Path root = Fixtures.root();
        Path sparkHome = dir.resolve("spark");
        Path recorded = dir.resolve("args.txt");
        // the stand-in keeps what it was given: the arguments and the list of the model archive's entries
        executable(sparkHome.resolve("bin/spark-submit"), """
                #!/bin/sh
                for a in "$@"; do printf '%s\\n' "$a"; done > "$ARGS_OUT"
                while [ $# -gt 0 ]; do
                  if [ "$1" = --archives ]; then tar -tzf "${2%#model}" | sort > "$ARGS_OUT.model"; fi
                  shift
                done
                """);
        Run submit = run(List.of("bash", root.resolve("deploy/yarn/submit-cluster.sh").toString(),
                        Fixtures.tinyModel().toString(), Fixtures.corpus("sysadmin.txt").toString(),
                        "train", "--steps", "3", "--out", "hdfs:///runs/a"),
                Map.of("SPARK_HOME", sparkHome.toString(), "ARGS_OUT", recorded.toString(),
                        "OPENBLAS_CORETYPE", "Haswell", "SPARKMOE_SUBMIT_OPTS", "--queue ml  --conf spark.executor.memory=2g"));
        assertEquals(0, submit.exitCode(), submit.output());

        List<String> args = Files.readAllLines(recorded);
        int classAt = args.indexOf("--class");
        assertEquals(List.of("--queue", "ml", "--conf", "spark.executor.memory=2g"), args.subList(classAt - 4, classAt),
                "SPARKMOE_SUBMIT_OPTS, split on whitespace, after the conf file and the script's own settings");
        String flags = String.join(" ", StandaloneCluster.jvmFlags());
        String log4j = " -Dlog4j2.configurationFile=log4j2.properties";
        assertEquals(List.of("--master", "yarn", "--deploy-mode", "cluster"), args.subList(0, 4));
        assertEquals(List.of("--class", "org.sparkmoe.driver.SparkMoe",
                root.resolve("assembly/target/sparkmoe-assembly.jar").toString(), "train",
                "--model", "file:///proc/self/cwd/model", "--data", "file:///proc/self/cwd/sysadmin.txt",
                "--base-model-name", Fixtures.tinyModel().toString(), "--steps", "3", "--out", "hdfs:///runs/a"),
                args.subList(args.indexOf("--class"), args.size()),
                "the adapter names the folder the user gave, not the container's copy");
        assertEquals(Fixtures.corpus("sysadmin.txt") + "," + root.resolve("conf/log4j2.properties"),
                after(args, "--files"));
        assertTrue(after(args, "--archives").endsWith("/model.tgz#model"), args.toString());
        for (String expected : List.of("spark.driver.extraJavaOptions=" + flags + log4j,
                "spark.executor.extraJavaOptions=" + flags + log4j, "spark.executorEnv.OPENBLAS_CORETYPE=Haswell",
                "spark.yarn.appMasterEnv.OPENBLAS_NUM_THREADS=1", "spark.executorEnv.OMP_NUM_THREADS=1",
                "spark.yarn.appMasterEnv.GLIBC_TUNABLES=glibc.malloc.hugetlb=1",
                "spark.executorEnv.GLIBC_TUNABLES=glibc.malloc.hugetlb=1")) {
            assertTrue(args.contains(expected), expected + " in " + args);
        }
        List<String> modelFiles;
        try (Stream<Path> files = Files.list(Fixtures.tinyModel())) {
            modelFiles = files.map(f -> "./" + f.getFileName()).sorted().toList();
        }
        List<String> archived = Files.readAllLines(Path.of(recorded + ".model"));
        assertEquals(modelFiles, archived.stream().filter(e -> !e.equals("./")).toList(),
                "the folder's files at the archive's top level: YARN unpacks it as ./model/config.json, ...");

        String uploaded = "hdfs:///apps/sparkmoe/sparkmoe-assembly.jar";
        Run named = run(List.of("bash", root.resolve("deploy/yarn/submit-cluster.sh").toString(),
                        Fixtures.tinyModel().toString(), Fixtures.corpus("sysadmin.txt").toString(),
                        "train", "--base-model-name", "mistralai/Mixtral-8x7B-v0.1", "--out", "hdfs:///runs/b"),
                Map.of("SPARK_HOME", sparkHome.toString(), "ARGS_OUT", recorded.toString(),
                        "SPARKMOE_ASSEMBLY", uploaded));
        assertEquals(0, named.exitCode(), named.output());
        args = Files.readAllLines(recorded);
        assertEquals(List.of(uploaded, "train", "--model", "file:///proc/self/cwd/model", "--data",
                        "file:///proc/self/cwd/sysadmin.txt", "--base-model-name", "mistralai/Mixtral-8x7B-v0.1",
                        "--out", "hdfs:///runs/b"), args.subList(args.indexOf("--class") + 2, args.size()),
                "SPARKMOE_ASSEMBLY is the jar submitted; the command's own --base-model-name is the only one");
    }

    private static String after(List<String> args, String option) {
        int i = args.indexOf(option);
        assertTrue(i >= 0 && i + 1 < args.size(), option + " in " + args);
        return args.get(i + 1);
    }

    @Test
    void gpuDiscoveryPrintsSparkResourceJson(@TempDir Path dir) throws Exception {
        String script = Fixtures.root().resolve("deploy/gpu/getGpusResources.sh").toString();
        executable(dir.resolve("gpus/nvidia-smi"), "#!/bin/sh\nprintf '0\\n1\\n2\\n'\n");
        Files.createDirectories(dir.resolve("none"));
        // the script needs nothing but bash's builtins and nvidia-smi: PATH holds the stand-in or nothing
        Map<String, String> gpus = Map.of("PATH", dir.resolve("gpus").toString());

        assertEquals(new Run(0, "{\"name\": \"gpu\", \"addresses\": [\"0\", \"1\", \"2\"]}\n"),
                run(List.of("/bin/bash", script), gpus));
        assertEquals(new Run(0, "{\"name\": \"gpu\", \"addresses\": [\"0\", \"1\"]}\n"),
                run(List.of("/bin/bash", script), Map.of("PATH", dir.resolve("gpus").toString(),
                        "CUDA_VISIBLE_DEVICES", "GPU-5f0c,GPU-77aa")));
        assertEquals(new Run(1, "getGpusResources: CUDA_VISIBLE_DEVICES hides every GPU\n"),
                run(List.of("/bin/bash", script), Map.of("PATH", dir.resolve("gpus").toString(),
                        "CUDA_VISIBLE_DEVICES", "void")));
        assertEquals(new Run(1, "getGpusResources: nvidia-smi not found\n"),
                run(List.of("/bin/bash", script), Map.of("PATH", dir.resolve("none").toString())));
    }
}
