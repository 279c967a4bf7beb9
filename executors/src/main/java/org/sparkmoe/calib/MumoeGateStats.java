package org.sparkmoe.calib;

import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.model.AdapterTerms.Key;
import org.sparkmoe.model.AdapterTerms.Site;

/**
 * The gate mass a μMoE adapter's terms give each expert, per input file and site: Σ over the file's tokens of
 * aₙ(x) (the gates a = act(x·G) [T, N] the forward pass computed: softmax, or entmax-1.5 with many aₙ exactly 0,
 * which add 0), and the tokens counted. A hierarchical
 * term's experts are the products n = (n_1, ..., n_L) of its levels, numbered row-major
 * (n = (n_1·N_2 + n_2)·N_3 + ...), with mass Σ_t a_1(n_1)···a_L(n_L) over the level gates a_l [T, N_l]. Exact sums
 * ({@link ExactSums}: 16 bytes per file, site and product expert, 64 KiB per file and site at N = 64·64), so any
 * partitioning and merge order gives the same bits. What {@link MumoeSpecialisation} reads.
 */
public final class MumoeGateStats implements java.io.Serializable {
    private final int[] siteLayers;         // the adapted sites, in the adapter's placement order: decoder layer
    private final int[] siteKinds;          //   and AdapterTerms.Site ordinal (plain arrays: this crosses Spark)
    private final int[] levels;             // [N_1, ..., N_L]
    private final int experts;              // N = N_1···N_L
    private final ExactSums[][] mass;       // [files][sites] N sums each
    private final long[][] tokens;          // [files][sites]

    /** @param levels the experts per level, [N] for a flat term */
    public MumoeGateStats(int files, List<Key> sites, int... levels) {
        if (sites.isEmpty() || levels.length == 0 || Arrays.stream(levels).anyMatch(n -> n < 1)) {
            throw new IllegalArgumentException("μMoE gate statistics need at least one site and one expert per level, "
                    + "got " + sites.size() + " sites of " + Arrays.toString(levels) + " experts");
        }
        this.siteLayers = sites.stream().mapToInt(Key::layer).toArray();
        this.siteKinds = sites.stream().mapToInt(k -> k.site().ordinal()).toArray();
        this.levels = levels.clone();
        this.experts = Arrays.stream(levels).reduce(1, Math::multiplyExact);
        this.mass = new ExactSums[files][sites.size()];
        this.tokens = new long[files][sites.size()];
        for (ExactSums[] perFile : mass) {
            for (int s = 0; s < perFile.length; s++) {
                perFile[s] = new ExactSums(experts);
            }
        }
    }

    /** The adapted sites, in the adapter's placement order. */
    public List<Key> sites() {
        List<Key> out = new java.util.ArrayList<>();
        for (int s = 0; s < siteLayers.length; s++) {
            out.add(new Key(siteLayers[s], Site.values()[siteKinds[s]]));
        }
        return out;
    }

    /** N = N_1···N_L, the (product) experts per site. */
    public int experts() {
        return experts;
    }

    /** [N_1, ..., N_L]. */
    public int[] levels() {
        return levels.clone();
    }

    public int files() {
        return mass.length;
    }

    /**
     * Adds the gates of the term at {@code site} over T tokens of input file {@code file}: one [T, N_l] per level,
     * each expert's mass the product of its levels' gates.
     */
    public void add(int file, Key site, List<INDArray> gates) {
        int s = sites().indexOf(site);
        if (s < 0) {
            throw new IllegalArgumentException("μMoE gates at layer " + site.layer() + " " + site.site().id()
                    + ", a site the adapter does not have (" + sites() + ")");
        }
        if (gates.size() != levels.length) {
            throw new IllegalArgumentException("μMoE gates at layer " + site.layer() + " " + site.site().id()
                    + ": " + gates.size() + " levels, expected " + levels.length);
        }
        int t = (int) gates.get(0).size(0);
        double[] alpha = new double[t * experts];                       // [T, N]: Π_l a_l(n_l), n row-major
        Arrays.fill(alpha, 1.0);
        int stride = experts;
        for (int l = 0; l < levels.length; l++) {
            INDArray g = gates.get(l);
            if (g.rank() != 2 || g.size(0) != t || g.size(1) != levels[l]) {
                throw new IllegalArgumentException("μMoE gates of level " + l + " at layer " + site.layer() + " "
                        + site.site().id() + " have shape " + Arrays.toString(g.shape()) + ", expected ["
                        + t + ", " + levels[l] + "]");
            }
            double[] a = g.castTo(DataType.DOUBLE).dup('c').data().asDouble();    // [T, N_l]
            stride /= levels[l];                                        // Π_{m > l} N_m
            for (int row = 0; row < t; row++) {
                for (int n = 0; n < experts; n++) {
                    alpha[row * experts + n] *= a[row * levels[l] + n / stride % levels[l]];
                }
            }
        }
        ExactSums sums = mass[file][s];
        for (int row = 0; row < t; row++) {
            for (int n = 0; n < experts; n++) {
                sums.add(n, alpha[row * experts + n]);
            }
        }
        tokens[file][s] += t;
    }

    /** Σ aₙ over the tokens of {@code file} at site index {@code s}: [N]. */
    public double[] mass(int file, int s) {
        return mass[file][s].toArray();
    }

    /** Tokens of {@code file} seen at site index {@code s}. */
    public long tokens(int file, int s) {
        return tokens[file][s];
    }

    /** this += other (exact, order-independent). */
    public MumoeGateStats merge(MumoeGateStats other) {
        if (!sameSites(other) || !Arrays.equals(other.levels, levels) || other.mass.length != mass.length) {
            throw new IllegalArgumentException("merging μMoE gate statistics of another adapter or file count");
        }
        for (int f = 0; f < mass.length; f++) {
            for (int s = 0; s < siteLayers.length; s++) {
                mass[f][s].merge(other.mass[f][s]);
                tokens[f][s] += other.tokens[f][s];
            }
        }
        return this;
    }

    private boolean sameSites(MumoeGateStats other) {
        return Arrays.equals(siteLayers, other.siteLayers) && Arrays.equals(siteKinds, other.siteKinds);
    }

    public boolean sameAs(MumoeGateStats other) {
        if (!sameSites(other) || !Arrays.equals(other.levels, levels) || other.mass.length != mass.length) {
            return false;
        }
        for (int f = 0; f < mass.length; f++) {
            if (!Arrays.equals(tokens[f], other.tokens[f])) {
                return false;
            }
            for (int s = 0; s < siteLayers.length; s++) {
                if (!mass[f][s].sameAs(other.mass[f][s])) {
                    return false;
                }
            }
        }
        return true;
    }
}
