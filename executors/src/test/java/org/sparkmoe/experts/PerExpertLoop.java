package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.ops.transforms.Transforms;

/**
 * The reference for {@link ExpertRows}: what PEFT and transformers do, one expert at a time on a copy of its
 * rows, with dense float64 products. Forward per expert (s = α/R):
 * <pre>
 *   h1 = x·W1ᵀ + s·(x·A1ᵀ)·B1ᵀ,  h3 likewise,  act = silu(h1) ⊙ h3,  y = act·W2ᵀ + s·(act·A2ᵀ)·B2ᵀ
 * </pre>
 * and its backward derived by hand: for a projection h = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with upstream dh,
 * dB = s·dhᵀ·(x·Aᵀ), dA = s·(dh·B)ᵀ·x, dx = dh·W + s·(dh·B)·A; silu'(z) = σ(z)(1 + z(1 − σ(z))).
 */
final class PerExpertLoop {
    private PerExpertLoop() {
    }

    /** @return {ys, dxs, gate dA, gate dB, up dA, up dB, down dA, down dB}, all float64 */
    static INDArray[] run(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down, INDArray xs,
                          INDArray dys, int[] offsets) {
        INDArray w1 = base.w1().toArray(DataType.DOUBLE);
        INDArray w3 = base.w3().toArray(DataType.DOUBLE);
        INDArray w2 = base.w2().toArray(DataType.DOUBLE);
        INDArray ys = Nd4j.zeros(DataType.DOUBLE, xs.size(0), w2.size(1));
        INDArray dxs = Nd4j.zeros(DataType.DOUBLE, xs.shape());
        INDArray[] grads = {Nd4j.zeros(DataType.DOUBLE, gate.a().shape()), Nd4j.zeros(DataType.DOUBLE, gate.b().shape()),
                Nd4j.zeros(DataType.DOUBLE, up.a().shape()), Nd4j.zeros(DataType.DOUBLE, up.b().shape()),
                Nd4j.zeros(DataType.DOUBLE, down.a().shape()), Nd4j.zeros(DataType.DOUBLE, down.b().shape())};
        for (int e = 0; e + 1 < offsets.length; e++) {
            if (offsets[e] == offsets[e + 1]) {
                continue;
            }
            INDArray x = rows(xs, offsets, e);
            INDArray dy = rows(dys, offsets, e);
            INDArray h1 = project(x, w1, gate, e);
            INDArray h3 = project(x, w3, up, e);
            INDArray sig = Transforms.sigmoid(h1, true);
            INDArray silu = h1.mul(sig);
            INDArray act = silu.mul(h3);
            ys.get(NDArrayIndex.interval(offsets[e], offsets[e + 1]), NDArrayIndex.all())
                    .assign(project(act, w2, down, e));

            INDArray dAct = projectBackward(act, w2, down, e, dy, grads, 4);
            INDArray dh3 = dAct.mul(silu);
            INDArray dh1 = dAct.mul(h3).mul(sig).mul(h1.mul(sig.rsub(1.0)).add(1.0));
            INDArray dx = projectBackward(x, w1, gate, e, dh1, grads, 0)
                    .add(projectBackward(x, w3, up, e, dh3, grads, 2));
            dxs.get(NDArrayIndex.interval(offsets[e], offsets[e + 1]), NDArrayIndex.all()).assign(dx);
        }
        return new INDArray[] {ys, dxs, grads[0], grads[1], grads[2], grads[3], grads[4], grads[5]};
    }

    private static INDArray rows(INDArray a, int[] offsets, int e) {
        return a.get(NDArrayIndex.interval(offsets[e], offsets[e + 1]), NDArrayIndex.all()).dup()
                .castTo(DataType.DOUBLE);
    }

    private static INDArray d(INDArray w, int e) {
        return w.slice(e).dup().castTo(DataType.DOUBLE);
    }

    private static INDArray project(INDArray x, INDArray w, LoraExperts l, int e) {
        INDArray h = x.mmul(d(w, e).transpose());
        return h.add(x.mmul(d(l.a(), e).transpose()).mmul(d(l.b(), e).transpose()).mul(l.scale()));
    }

    /** Writes dA into grads[at] and dB into grads[at+1] for expert e; returns dx. */
    private static INDArray projectBackward(INDArray x, INDArray w, LoraExperts l, int e, INDArray dh,
                                            INDArray[] grads, int at) {
        INDArray a = d(l.a(), e);
        INDArray b = d(l.b(), e);
        INDArray dhB = dh.mmul(b);                                               // [n, R]
        grads[at + 1].slice(e).assign(dh.transpose().mmul(x.mmul(a.transpose())).mul(l.scale()));
        grads[at].slice(e).assign(dhB.transpose().mmul(x).mul(l.scale()));
        return dh.mmul(d(w, e)).add(dhB.mmul(a).mul(l.scale()));
    }
}
