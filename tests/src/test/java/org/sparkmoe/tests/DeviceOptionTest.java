package org.sparkmoe.tests;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparkmoe.cuda.CudaLibrary;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code --device cuda} where the CUDA library cannot be loaded (here: pointed at a missing file, so the test
 * takes the same path on every machine, GPU or not): one line naming the cause, exit 1, nothing run.
 */
class DeviceOptionTest {

    @BeforeAll
    static void noLibrary() {
        System.setProperty(CudaLibrary.PROPERTY, "/nonexistent/libsparkmoe_cuda.so");
    }

    @AfterAll
    static void restore() {
        System.clearProperty(CudaLibrary.PROPERTY);
    }

    @Test
    void benchWithoutTheLibraryFailsInOneLine() {
        CliRun run = CliRun.sparkmoe("bench", "moe", "--device", "cuda", "--cases", "small-batch", "--repeats", "1");
        assertEquals(1, run.exitCode(), run.err());
        assertTrue(run.firstLine().contains("--device cuda: cannot load /nonexistent/libsparkmoe_cuda.so"), run.err());
        assertEquals(1, run.err().lines().filter(l -> !l.isBlank()).count(), run.err());
    }

    @Test
    void evalWithoutTheLibraryFailsBeforeAnyWork() {
        CliRun run = CliRun.sparkmoe("eval", "--device", "cuda", "--model", Fixtures.tinyModel().toString(),
                "--data", Fixtures.corpus("fortunes.txt").toString());
        assertEquals(1, run.exitCode(), run.err());
        assertTrue(run.firstLine().contains("--device cuda: cannot load"), run.err());
    }

    @Test
    void unknownDeviceIsABadFlag() {
        CliRun run = CliRun.sparkmoe("bench", "moe", "--device", "tpu");
        assertEquals(2, run.exitCode(), run.err());
        assertTrue(run.err().contains("unknown device 'tpu', expected cpu or cuda"), run.err());
    }
}
