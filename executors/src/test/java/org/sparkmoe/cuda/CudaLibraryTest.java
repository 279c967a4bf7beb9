package org.sparkmoe.cuda;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The failure paths of loading the CUDA library, which every machine without the library or a GPU takes. */
class CudaLibraryTest {

    @Test
    void missingLibraryIsOneLineNamingTheFile() {
        CudaUnavailableException e = assertThrows(CudaUnavailableException.class,
                () -> CudaLibrary.loadOnce("/nonexistent/libsparkmoe_cuda.so"));
        assertTrue(e.getMessage().startsWith("--device cuda: cannot load /nonexistent/libsparkmoe_cuda.so"),
                e.getMessage());
        assertEquals(1, e.getMessage().lines().count());
    }

    @Test
    void aFileThatIsNoLibraryIsOneLine(@TempDir Path dir) throws Exception {
        Path bogus = Files.writeString(dir.resolve("libsparkmoe_cuda.so"), "not an ELF file");
        CudaUnavailableException e = assertThrows(CudaUnavailableException.class,
                () -> CudaLibrary.loadOnce(bogus.toString()));
        assertTrue(e.getMessage().startsWith("--device cuda: cannot load " + bogus), e.getMessage());
        assertEquals(1, e.getMessage().lines().count());
    }

    @Test
    void isABadInputForTheCommandLine() {
        assertTrue(IllegalArgumentException.class.isAssignableFrom(CudaUnavailableException.class));
    }
}
