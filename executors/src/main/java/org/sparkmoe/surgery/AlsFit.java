package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What an ALS fit of one projection's stacked experts W [E, out, in] gives ({@link CpAls}, {@link TrAls}): its three
 * factors in float64, in the form's layout, and how the fit went.
 *
 * @param experts    the experts' factor: CP U_N [E, R], TR G_N [r1, E, r2]
 * @param in         the input's: CP U_I [in, R], TR G_I [r2, in, r3]
 * @param out        the output's: CP U_O [out, R], TR G_O [r3, out, r1]
 * @param iterations sweeps run
 * @param relError   ‖W − Ŵ‖_F / ‖W‖_F of these float64 factors after the last sweep
 */
public record AlsFit(INDArray experts, INDArray in, INDArray out, int iterations, double relError) {
}
