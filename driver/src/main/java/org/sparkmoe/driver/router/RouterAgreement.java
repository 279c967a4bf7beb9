package org.sparkmoe.driver.router;

import java.util.Arrays;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.routing.TopK;

/**
 * Top-k set agreement between a teacher distribution and a router's logits: a token agrees when the k largest
 * entries of both pick the same set of experts (ties go to the lower index, as the router's top-k).
 */
final class RouterAgreement {
    private RouterAgreement() {
    }

    /** @return tokens whose top-k sets agree, for labels [N, E'] and logits [N, E'] */
    static long agreeing(INDArray labels, INDArray logits, int k) {
        double[] a = labels.dup('c').data().asDouble();
        double[] b = logits.dup('c').data().asDouble();
        int e = (int) labels.size(1);
        long agree = 0;
        for (int t = 0; t < labels.size(0); t++) {
            if (Arrays.equals(TopK.members(a, t * e, e, k), TopK.members(b, t * e, e, k))) {
                agree++;
            }
        }
        return agree;
    }
}
