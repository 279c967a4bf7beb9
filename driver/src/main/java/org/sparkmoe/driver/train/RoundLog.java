package org.sparkmoe.driver.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.util.Locale;

/**
 * One line of the JSON-lines training log, one per round.
 *
 * @param round          0-based round
 * @param step           optimiser steps taken after it
 * @param loss           mean training loss (CE + coef · aux) over partitions and the round's steps
 * @param ce             mean cross-entropy
 * @param aux            mean load-balancing loss (unweighted)
 * @param lr             learning rate of the round's last step
 * @param tokens         tokens forwarded by all partitions
 * @param seconds        the round's wall time on the driver
 * @param computeSeconds the slowest partition's time in its local steps
 * @param partitions     P
 * @param bytesRead      trainable-state bytes (tensors and moments) the round's tasks start from: the last mean, kept on
 *                       the executors (read from the executor's own memory when it made it)
 * @param bytesReturned  bytes of the P float32 partials averaged through the shuffle
 * @param executorRssAnon the largest anonymous RSS (heap, ND4J buffers; not the mapped weights) of an executor JVM
 *                       at the end of its local steps, bytes; −1 where unknown (not Linux)
 * @param executorHeapCommitted that JVM's committed heap then, bytes: the rest of its anonymous RSS is off the heap
 */
public record RoundLog(long round, long step, double loss, double ce, double aux, double lr, long tokens,
                       double seconds, double computeSeconds, int partitions, long bytesRead,
                       long bytesReturned, long executorRssAnon, long executorHeapCommitted) {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Round time not spent in local steps: scheduling, reading the kept state, the shuffle and the means. */
    public double averagingSeconds() {
        return Math.max(0, seconds - computeSeconds);
    }

    public double tokensPerSecond() {
        return tokens / seconds;
    }

    /** Tokens per second of one partition (one executor slot) during its local steps. */
    public double tokensPerSecondPerPartition() {
        return tokens / (double) partitions / computeSeconds;
    }

    public String toJson() {
        ObjectNode o = JSON.createObjectNode();
        o.put("round", round);
        o.put("step", step);
        o.put("loss", loss);
        o.put("ce_loss", ce);
        o.put("aux_loss", aux);
        o.put("lr", lr);
        o.put("tokens", tokens);
        o.put("tokens_per_s", tokensPerSecond());
        o.put("tokens_per_s_per_partition", tokensPerSecondPerPartition());
        o.put("round_s", seconds);
        o.put("averaging_s", averagingSeconds());
        o.put("bytes_averaged", bytesRead + bytesReturned);
        if (executorRssAnon >= 0) {
            o.put("executor_rss_anon_bytes", executorRssAnon);
            o.put("executor_heap_committed_bytes", executorHeapCommitted);
        }
        return o.toString();
    }

    /** The console progress line. */
    public String summary(long rounds, long steps) {
        return String.format(Locale.ROOT, "train: round %d/%d step %d/%d loss %.4f (ce %.4f, aux %.4f) lr %.3g "
                        + "%.0f tokens/s (%.0f per partition) round %.2f s, averaging %.2f s (%.0f%%), %.3f MB averaged%s",
                round + 1, rounds, step, steps, loss, ce, aux, lr, tokensPerSecond(), tokensPerSecondPerPartition(),
                seconds, averagingSeconds(), 100 * averagingSeconds() / seconds,
                (bytesRead + bytesReturned) / 1e6, executorRssAnon < 0 ? ""
                        : String.format(Locale.ROOT, ", executor anon RSS %d MiB (heap %d MiB)", executorRssAnon >> 20,
                        executorHeapCommitted >> 20));
    }
}
