package org.sparkmoe.train;

/**
 * What one training step reports.
 *
 * @param loss     ce + coef · aux, before the update
 * @param ceLoss   mean causal-LM cross-entropy over the scored positions
 * @param auxLoss  the load-balancing loss (unweighted)
 * @param tokens   tokens processed (B·S)
 * @param scored   positions scored (B·(S−1))
 * @param lr       the learning rate used
 * @param gradNorm the global gradient norm before clipping
 * @param step     the state's step count after the update
 */
public record StepResult(double loss, double ceLoss, double auxLoss, long tokens, long scored, double lr,
                         double gradNorm, long step) {
}
