package org.sparkmoe.driver.router;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Top-k set agreement between a teacher distribution and a router's logits: a token agrees when the k largest
 * entries of both pick the same set of experts (ties go to the lower index, as the router's top-k).
 */
final class RouterAgreement {
    private RouterAgreement() {
    }

    /** @return tokens whose top-k sets agree, for labels [N, E'] and logits [N, E'] */
    static long agreeing(INDArray labels, INDArray logits, int k) {
        float[] a = labels.dup('c').data().asFloat();
        float[] b = logits.dup('c').data().asFloat();
        int e = (int) labels.size(1);
        long agree = 0;
        for (int t = 0; t < labels.size(0); t++) {
            if (java.util.Arrays.equals(topSet(a, t * e, e, k), topSet(b, t * e, e, k))) {
                agree++;
            }
        }
        return agree;
    }

    /** Which of row [at, at+n) are among its k largest. */
    static boolean[] topSet(float[] row, int at, int n, int k) {
        boolean[] taken = new boolean[n];
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int i = 0; i < n; i++) {
                if (!taken[i] && (best < 0 || row[at + i] > row[at + best])) {
                    best = i;
                }
            }
            taken[best] = true;
        }
        return taken;
    }
}
