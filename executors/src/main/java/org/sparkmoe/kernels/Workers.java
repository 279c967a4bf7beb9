package org.sparkmoe.kernels;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A fixed number of threads that run the shares of one piece of work and wait for all of them: the caller's thread
 * runs share 0, a pool of {@code threads − 1} daemon threads owned by this instance runs the others. No per-call
 * state is kept in fields, so one instance may be used from several threads at once.
 */
public final class Workers {

    /** Everything on the caller's thread. */
    public static final Workers SERIAL = new Workers(1);

    private static final AtomicInteger POOLS = new AtomicInteger();

    private final int threads;
    private final ExecutorService pool;   // threads - 1 workers; null when serial

    /** @param threads threads to spread the shares over, the caller's included; 1 runs everything in order */
    public Workers(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("worker threads must be at least 1, got " + threads);
        }
        this.threads = threads;
        if (threads == 1) {
            this.pool = null;
        } else {
            int id = POOLS.incrementAndGet();
            AtomicInteger n = new AtomicInteger();
            this.pool = Executors.newFixedThreadPool(threads - 1, r -> {
                Thread t = new Thread(r, "sparkmoe-worker-" + id + "-" + n.incrementAndGet());
                t.setDaemon(true);
                return t;
            });
        }
    }

    public int threads() {
        return threads;
    }

    /** Work on the half-open range {@code from..to-1}. */
    public interface RangeBody {
        void run(int from, int to);
    }

    /**
     * Runs {@code shares[0]} on the caller's thread and the others on the pool, at most {@link #threads()} of them;
     * returns when all are done and rethrows the first failure.
     */
    public void run(Runnable... shares) {
        if (shares.length > threads) {
            throw new IllegalArgumentException(shares.length + " shares for " + threads + " worker threads");
        }
        List<Future<?>> pending = new ArrayList<>(shares.length);
        for (int t = 1; t < shares.length; t++) {
            pending.add(pool.submit(shares[t]));
        }
        Throwable failure = null;
        try {
            if (shares.length > 0) {
                shares[0].run();
            }
        } catch (RuntimeException | Error e) {
            failure = e;
        }
        for (Future<?> f : pending) {
            try {
                f.get();
            } catch (ExecutionException e) {
                failure = failure == null ? e.getCause() : failure;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                failure = failure == null ? e : failure;
            }
        }
        if (failure instanceof RuntimeException re) {
            throw re;
        } else if (failure instanceof Error err) {
            throw err;
        } else if (failure != null) {
            throw new IllegalStateException("worker thread failed", failure);
        }
    }

    /**
     * Splits {@code 0..n-1} into contiguous ranges of at least {@code minPerShare} (as many as there are threads,
     * fewer when n is small) and runs {@code body} on each, in parallel.
     */
    public void forRanges(int n, int minPerShare, RangeBody body) {
        int shares = (int) Math.max(1, Math.min(threads, n / Math.max(1L, minPerShare)));
        Runnable[] work = new Runnable[shares];
        for (int s = 0; s < shares; s++) {
            int from = (int) ((long) n * s / shares);
            int to = (int) ((long) n * (s + 1) / shares);
            work[s] = () -> body.run(from, to);
        }
        run(work);
    }
}
