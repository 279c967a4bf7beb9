package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.factory.Nd4j;

/** ND4J's backend loads on the calling thread, which starts no thread of SparkMoE's to do it. */
class Nd4jLoadTest {
    @Test
    void theBackendIsLoadedWhenTheCallReturnsAndNoHelperThreadDidIt() {
        Set<String> before = names();
        Nd4jLoad.now();
        assertTrue(Nd4jLoad.done());
        assertNotNull(Nd4j.getExecutioner());
        Set<String> started = names();
        started.removeAll(before);
        assertEquals(Set.of(), started.stream().filter(n -> n.startsWith("sparkmoe")).collect(Collectors.toSet()),
                "no SparkMoE thread loads the backend beside the caller");
        Nd4jLoad.now();                                   // a second call returns at once
        assertTrue(Nd4jLoad.done());
    }

    private static Set<String> names() {
        return Thread.getAllStackTraces().keySet().stream().map(Thread::getName).collect(Collectors.toSet());
    }
}
