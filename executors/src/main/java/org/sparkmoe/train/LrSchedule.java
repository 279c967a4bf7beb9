package org.sparkmoe.train;

/**
 * Linear warmup then cosine decay to zero, as transformers' {@code get_cosine_schedule_with_warmup}: the update
 * taken after {@code s} completed steps uses {@code peak · λ(s)} with λ(s) = s / max(1, warmup) while s &lt; warmup,
 * else max(0, ½·(1 + cos(π · (s − warmup) / max(1, total − warmup)))). (So with warmup the very first update has
 * rate 0, as there.)
 *
 * @param peak   the peak learning rate
 * @param warmup warmup steps ≥ 0
 * @param total  total steps ≥ warmup
 */
public record LrSchedule(double peak, long warmup, long total) implements java.io.Serializable {

    public LrSchedule {
        if (!(peak > 0) || Double.isInfinite(peak)) {
            throw new IllegalArgumentException("learning rate must be positive and finite, got " + peak);
        }
        if (warmup < 0 || total < 1 || warmup > total) {
            throw new IllegalArgumentException("need 0 ≤ warmup ≤ total steps and total ≥ 1, got warmup " + warmup
                    + ", total " + total);
        }
    }

    /** The learning rate of the update that follows {@code completedSteps} steps. */
    public double at(long completedSteps) {
        if (completedSteps < warmup) {
            return peak * completedSteps / Math.max(1, warmup);
        }
        double progress = (double) (completedSteps - warmup) / Math.max(1, total - warmup);
        return peak * Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * progress)));
    }
}
