package org.sparkmoe.driver.train;

import org.sparkmoe.train.StateSum;

/**
 * What one partition sends back after its F local steps of a round: its state weighted by the windows it
 * trained on, and the sums of its step losses for the log.
 */
final class RoundPartial {
    int partition;
    StateSum state;
    int steps;
    double lossSum;
    double ceSum;
    double auxSum;
    long tokens;
    double seconds;

    /** For Kryo. */
    RoundPartial() {
    }

    RoundPartial(int partition, StateSum state, int steps, double lossSum, double ceSum, double auxSum, long tokens,
                 double seconds) {
        this.partition = partition;
        this.state = state;
        this.steps = steps;
        this.lossSum = lossSum;
        this.ceSum = ceSum;
        this.auxSum = auxSum;
        this.tokens = tokens;
        this.seconds = seconds;
    }
}
