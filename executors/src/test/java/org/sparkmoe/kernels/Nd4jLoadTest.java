package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * ND4J's backend is loaded, on the calling thread, when {@link Nd4jLoad#now} returns: in a new JVM (this one may
 * have loaded it already), libnd4j is not mapped before the call and is right after it, with no thread of ours
 * started for it.
 */
class Nd4jLoadTest {
    @Test
    void theBackendIsMappedWhenTheCallReturns() throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.addAll(java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments().stream()
                .filter(a -> a.startsWith("--add-") || a.startsWith("-Dorg.bytedeco")).toList());
        command.addAll(List.of("-cp", System.getProperty("java.class.path"), Probe.class.getName()));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
        }
        assertEquals(0, p.exitValue(), out);
        List<String> said = out.lines().filter(l -> l.startsWith("mapped ")).toList();
        assertEquals(List.of("mapped before: false", "mapped after: true, threads of ours: []"), said, out);
    }

    /** Prints whether libnd4j is mapped before and after {@link Nd4jLoad#now}, and the threads of ours it left. */
    static final class Probe {
        public static void main(String[] args) throws IOException {
            System.out.println("mapped before: " + mapped());
            Nd4jLoad.now();
            List<String> ours = Thread.getAllStackTraces().keySet().stream().map(Thread::getName)
                    .filter(n -> n.startsWith("sparkmoe")).toList();
            System.out.println("mapped after: " + mapped() + ", threads of ours: " + ours);
        }

        private static boolean mapped() throws IOException {
            return Files.readString(Path.of("/proc/self/maps")).contains("libnd4jcpu");
        }
    }
}
