package org.sparkmoe.mumoe;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The parameters of a tensor-ring μMoE layer with L ≥ 1 levels of experts [N_1, ..., N_L]: a ring of L + 2 cores
 * with ranks (r1, ..., r_{L+2}),
 * <pre>
 *   gates[l]    // [I, N_l]              G_l: a_l = softmax(x·G_l)
 *   experts[l]  // [r_l, N_l, r_{l+1}]   A_Nl (levels l = 1..L)
 *   in          // [r_{L+1}, I, r_{L+2}] A_I
 *   out         // [r_{L+2}, O, r1]      A_O
 * </pre>
 * so that W(n_1, ..., n_L, i, o) = trace(A_N1[:, n_1, :] ··· A_NL[:, n_L, :] · A_I[:, i, :] · A_O[:, o, :]). A flat
 * layer (L = 1) is A_N [r1, N, r2], A_I [r2, I, r3], A_O [r3, O, r1]. All of one type, FLOAT or DOUBLE; held, not
 * copied. Names: {@code gate.l} per level, the expert cores {@code core.expert} (flat) or {@code core.expert.l} (per
 * level l of a hierarchy), {@code core.in}, {@code core.out}.
 */
public final class TrWeights implements MumoeWeights {
    static final String LAYER = "μMoE TR";

    private final List<INDArray> gates;
    private final List<INDArray> experts;
    private final INDArray in;
    private final INDArray out;
    private final long[] ranks;
    private final DataType dataType;

    public TrWeights(List<INDArray> gates, List<INDArray> experts, INDArray in, INDArray out) {
        if (gates == null || experts == null || gates.isEmpty() || gates.size() != experts.size()) {
            throw new IllegalArgumentException(LAYER + ": expected one gate per expert level and at least one level, "
                    + "found " + (gates == null ? 0 : gates.size()) + " gates and "
                    + (experts == null ? 0 : experts.size()) + " expert cores");
        }
        int levels = gates.size();
        for (int l = 0; l < levels; l++) {
            requireCore("expert core " + l, experts.get(l));
        }
        requireCore("core A_I", in);
        requireCore("core A_O", out);
        this.dataType = MumoeShapes.floating(LAYER, experts.get(0));
        this.ranks = new long[levels + 2];                  // r1 from A_N1, then each core's right rank
        ranks[0] = experts.get(0).size(0);
        for (int l = 0; l < levels; l++) {
            ranks[l + 1] = experts.get(l).size(2);
        }
        ranks[levels + 1] = in.size(2);
        for (int l = 0; l < levels; l++) {
            INDArray core = experts.get(l);
            MumoeShapes.require(LAYER, coreName(l, levels), core, ranks[l], core.size(1), ranks[l + 1]);
            MumoeShapes.require(LAYER, gateName(l, levels), gates.get(l), in.size(1), core.size(1));
            MumoeShapes.requireType(LAYER, "core A_N" + (levels == 1 ? "" : l + 1), core, dataType);
            MumoeShapes.requireType(LAYER, levels == 1 ? "gate" : "gate " + l, gates.get(l), dataType);
        }
        MumoeShapes.require(LAYER, "core A_I [r" + (levels + 1) + ", I, r" + (levels + 2) + "]", in,
                ranks[levels], in.size(1), ranks[levels + 1]);
        MumoeShapes.require(LAYER, "core A_O [r" + (levels + 2) + ", O, r1]", out,
                ranks[levels + 1], out.size(1), ranks[0]);
        MumoeShapes.requireType(LAYER, "core A_I", in, dataType);
        MumoeShapes.requireType(LAYER, "core A_O", out, dataType);
        for (INDArray core : experts) {
            for (long d : core.shape()) {
                MumoeShapes.requirePositive(LAYER, "every core dimension", d);
            }
        }
        MumoeShapes.requirePositive(LAYER, "every core dimension", ranks[levels + 1]);
        this.gates = List.copyOf(gates);
        this.experts = List.copyOf(experts);
        this.in = in;
        this.out = out;
    }

    private static void requireCore(String name, INDArray core) {
        if (core == null || core.rank() != 3) {
            throw new IllegalArgumentException(LAYER + ": " + name + " must have rank 3 ([r_l, N_l, r_{l+1}] per "
                    + "level, [r_{L+1}, I, r_{L+2}], [r_{L+2}, O, r1]), found " + shape(core));
        }
    }

    /** "core A_N [r1, N, r2]" for a flat layer, "core A_N2 [r2, N_2, r3]" for level 2 (l = 1) of a hierarchy. */
    private static String coreName(int l, int levels) {
        String n = levels == 1 ? "" : String.valueOf(l + 1);
        return "core A_N" + n + " [r" + (l + 1) + ", N" + (n.isEmpty() ? "" : "_" + n) + ", r" + (l + 2) + "]";
    }

    private static String gateName(int l, int levels) {
        return levels == 1 ? "gate [I, N]" : "gate " + l + " [I, N_" + (l + 1) + "]";
    }

    /** The name of level l's expert core among {@code levels}: {@code core.expert} (flat) or {@code core.expert.l}. */
    public static String expertName(int l, int levels) {
        return levels == 1 ? "core.expert" : "core.expert." + l;
    }

    /**
     * Gaussian cores scaled so that W's entries are of order 1/√I (each core of variance (Π ranks)^(-1/(L+2)), A_I's
     * divided by √I more); gate scale 1/√I. {@code ranks} holds L + 2 ranks r1, ..., r_{L+2} for the L levels of
     * {@code expertDims}.
     */
    public static TrWeights random(Random rnd, DataType type, long inputSize, long outputSize, long[] expertDims,
                                   long... ranks) {
        int levels = expertDims.length;
        if (levels == 0 || ranks.length != levels + 2) {
            throw new IllegalArgumentException(LAYER + ": expected at least one expert level and L + 2 ranks, found "
                    + levels + " levels and " + ranks.length + " ranks");
        }
        double product = 1;
        for (long r : ranks) {
            product *= r;
        }
        double s = Math.sqrt(Math.pow(product, -1.0 / (levels + 2)));
        List<INDArray> g = new ArrayList<>();
        List<INDArray> cores = new ArrayList<>();
        for (long n : expertDims) {
            g.add(CpWeights.gaussian(rnd, type, 1 / Math.sqrt(inputSize), inputSize, n));
        }
        for (int l = 0; l < levels; l++) {
            cores.add(CpWeights.gaussian(rnd, type, s, ranks[l], expertDims[l], ranks[l + 1]));
        }
        return new TrWeights(g, cores,
                CpWeights.gaussian(rnd, type, s / Math.sqrt(inputSize), ranks[levels], inputSize, ranks[levels + 1]),
                CpWeights.gaussian(rnd, type, s, ranks[levels + 1], outputSize, ranks[0]));
    }

    private static String shape(INDArray a) {
        return a == null ? "null" : java.util.Arrays.toString(a.shape());
    }

    public List<INDArray> gates() {
        return gates;
    }

    /** A_Nl [r_l, N_l, r_{l+1}] per level. */
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

    /** r_{k+1}: the ring's k-th rank (k = 0..L+1), A_Nl [rank(l-1), N_l, rank(l)], A_I [rank(L), I, rank(L+1)]. */
    public long rank(int k) {
        return ranks[k];
    }

    @Override
    public long inputSize() {
        return in.size(1);
    }

    @Override
    public long outputSize() {
        return out.size(1);
    }

    @Override
    public long[] expertDims() {
        return experts.stream().mapToLong(c -> c.size(1)).toArray();
    }

    public DataType dataType() {
        return dataType;
    }

    /** gate.0 .. gate.(L-1), the expert cores, core.in, core.out. */
    @Override
    public Map<String, INDArray> parameters() {
        Map<String, INDArray> m = new LinkedHashMap<>();
        for (int l = 0; l < levels(); l++) {
            m.put("gate." + l, gates.get(l));
        }
        for (int l = 0; l < levels(); l++) {
            m.put(expertName(l, levels()), experts.get(l));
        }
        m.put("core.in", in);
        m.put("core.out", out);
        return Collections.unmodifiableMap(m);
    }
}
