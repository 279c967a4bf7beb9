package org.sparkmoe.mumoe;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The parameters of a CP μMoE layer with L ≥ 1 levels of experts (L = 1: flat, L = 2: hierarchical):
 * <pre>
 *   gates[l]   // [I, N_l]  G_l: a_l = softmax(x·G_l)
 *   experts[l] // [N_l, R]  U⁽ᴺˡ⁾
 *   in         // [I, R]    U⁽ᴵ⁾
 *   out        // [O, R]    U⁽ᴼ⁾
 * </pre>
 * so that W(n_1, ..., n_L, i, o) = Σ_r Π_l U⁽ᴺˡ⁾[n_l, r] · U⁽ᴵ⁾[i, r] · U⁽ᴼ⁾[o, r]. All of one type, FLOAT or
 * DOUBLE. The tensors are held, not copied: a trainer may update them in place. Names: {@code gate.l},
 * {@code expert.l}, {@code in}, {@code out}.
 */
public final class CpWeights implements MumoeWeights {
    static final String LAYER = "μMoE CP";

    private final List<INDArray> gates;
    private final List<INDArray> experts;
    private final INDArray in;
    private final INDArray out;
    private final long rank;
    private final DataType dataType;

    public CpWeights(List<INDArray> gates, List<INDArray> experts, INDArray in, INDArray out) {
        if (gates == null || experts == null || gates.isEmpty() || gates.size() != experts.size()) {
            throw new IllegalArgumentException(LAYER + ": expected one gate per expert level and at least one level, "
                    + "found " + (gates == null ? 0 : gates.size()) + " gates and "
                    + (experts == null ? 0 : experts.size()) + " expert factors");
        }
        if (in == null || in.rank() != 2 || out == null || out.rank() != 2) {
            throw new IllegalArgumentException(LAYER + ": the input factor [I, R] and output factor [O, R] must be "
                    + "matrices, found " + shape(in) + " and " + shape(out));
        }
        this.dataType = MumoeShapes.floating(LAYER, in);
        long i = in.size(0);
        this.rank = in.size(1);
        MumoeShapes.requirePositive(LAYER, "rank R", rank);
        MumoeShapes.require(LAYER, "output factor U(O)", out, out.size(0), rank);
        MumoeShapes.requireType(LAYER, "output factor U(O)", out, dataType);
        for (int l = 0; l < gates.size(); l++) {
            INDArray u = experts.get(l);
            if (u == null || u.rank() != 2) {
                throw new IllegalArgumentException(LAYER + ": expert factor " + l + " has shape " + shape(u)
                        + ", expected [N_" + l + ", R] with R = " + rank);
            }
            MumoeShapes.require(LAYER, "expert factor " + l + " [N_" + l + ", R]", u, u.size(0), rank);
            MumoeShapes.require(LAYER, "gate " + l + " [I, N_" + l + "]", gates.get(l), i, u.size(0));
            MumoeShapes.requireType(LAYER, "expert factor " + l, u, dataType);
            MumoeShapes.requireType(LAYER, "gate " + l, gates.get(l), dataType);
        }
        this.gates = List.copyOf(gates);
        this.experts = List.copyOf(experts);
        this.in = in;
        this.out = out;
    }

    /** Gaussian factors (scale 1/√R for the expert and input factors, 1/√(I) for the gates and 1 for U⁽ᴼ⁾). */
    public static CpWeights random(Random rnd, DataType type, long inputSize, long outputSize, long rank,
                                   long... expertDims) {
        if (expertDims.length == 0) {
            throw new IllegalArgumentException(LAYER + ": expected at least one expert level, found none");
        }
        List<INDArray> g = new ArrayList<>();
        List<INDArray> u = new ArrayList<>();
        for (long n : expertDims) {
            MumoeShapes.requirePositive(LAYER, "expert count", n);
            g.add(gaussian(rnd, type, 1 / Math.sqrt(inputSize), inputSize, n));
            u.add(gaussian(rnd, type, 1.0, n, rank));
        }
        return new CpWeights(g, u, gaussian(rnd, type, 1 / Math.sqrt(inputSize), inputSize, rank),
                gaussian(rnd, type, 1 / Math.sqrt(rank), outputSize, rank));
    }

    static INDArray gaussian(Random rnd, DataType type, double scale, long... shape) {
        for (long s : shape) {
            MumoeShapes.requirePositive("μMoE", "every dimension of a random tensor", s);
        }
        long n = 1;
        for (long s : shape) {
            n = Math.multiplyExact(n, s);
        }
        double[] v = new double[Math.toIntExact(n)];
        for (int k = 0; k < v.length; k++) {
            v[k] = rnd.nextGaussian() * scale;
        }
        return Nd4j.create(v, shape, 'c').castTo(type);
    }

    private static String shape(INDArray a) {
        return a == null ? "null" : java.util.Arrays.toString(a.shape());
    }

    public List<INDArray> gates() {
        return gates;
    }

    public List<INDArray> experts() {
        return experts;
    }

    public INDArray in() {
        return in;
    }

    public INDArray out() {
        return out;
    }

    public int levels() {
        return gates.size();
    }

    public long rank() {
        return rank;
    }

    @Override
    public long inputSize() {
        return in.size(0);
    }

    @Override
    public long outputSize() {
        return out.size(0);
    }

    @Override
    public long[] expertDims() {
        return experts.stream().mapToLong(u -> u.size(0)).toArray();
    }

    public DataType dataType() {
        return dataType;
    }

    /** gate.0 .. gate.(L-1), expert.0 .. expert.(L-1), in, out. */
    @Override
    public Map<String, INDArray> parameters() {
        Map<String, INDArray> m = new LinkedHashMap<>();
        for (int l = 0; l < levels(); l++) {
            m.put("gate." + l, gates.get(l));
        }
        for (int l = 0; l < levels(); l++) {
            m.put("expert." + l, experts.get(l));
        }
        m.put("in", in);
        m.put("out", out);
        return Collections.unmodifiableMap(m);
    }
}
