package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;

/** {@link Workers}: ranges cover every index once, shares run on distinct threads, failures reach the caller. */
class WorkersTest {

    @Test
    void rangesCoverEveryIndexExactlyOnce() {
        Workers three = new Workers(3);
        for (int n : new int[] {0, 1, 2, 7, 100, 1001}) {
            AtomicIntegerArray seen = new AtomicIntegerArray(Math.max(n, 1));
            three.forRanges(n, 1, (from, to) -> {
                for (int i = from; i < to; i++) {
                    seen.incrementAndGet(i);
                }
            });
            for (int i = 0; i < n; i++) {
                assertEquals(1, seen.get(i), "n " + n + ", index " + i);
            }
        }
    }

    @Test
    void smallWorkStaysOnFewerThreads() {
        Set<Thread> used = ConcurrentHashMap.newKeySet();
        new Workers(3).forRanges(10, 6, (from, to) -> used.add(Thread.currentThread()));
        assertEquals(Set.of(Thread.currentThread()), used, "10 items at 6 per share: one share, the caller's");
        Set<Thread> many = ConcurrentHashMap.newKeySet();
        new Workers(3).forRanges(30, 6, (from, to) -> many.add(Thread.currentThread()));
        assertEquals(3, many.size(), "30 items at 6 per share on 3 threads: 3 shares");
    }

    @Test
    void aFailingShareFailsTheCall() {
        Workers two = new Workers(2);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> two.run(() -> { },
                () -> {
                    throw new IllegalStateException("boom in share 1");
                }));
        assertEquals("boom in share 1", e.getMessage());
        IllegalArgumentException tooMany = assertThrows(IllegalArgumentException.class,
                () -> two.run(() -> { }, () -> { }, () -> { }));
        assertTrue(tooMany.getMessage().contains("3 shares for 2"), tooMany.getMessage());
    }
}
