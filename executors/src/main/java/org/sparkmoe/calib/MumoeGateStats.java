package org.sparkmoe.calib;

import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.model.AdapterTerms.Key;
import org.sparkmoe.model.AdapterTerms.Site;

/**
 * The gate mass a flat μMoE adapter's terms give each expert, per input file and site: Σ over the file's tokens of
 * aₙ(x) (the soft gates a = softmax(x·G) [T, N] the forward pass computed), and the tokens counted. Exact sums
 * ({@link ExactSums}), so any partitioning and merge order gives the same bits. What
 * {@link MumoeSpecialisation} reads.
 */
public final class MumoeGateStats implements java.io.Serializable {
    private final int[] siteLayers;         // the adapted sites, in the adapter's placement order: decoder layer
    private final int[] siteKinds;          //   and AdapterTerms.Site ordinal (plain arrays: this crosses Spark)
    private final int experts;              // N
    private final ExactSums[][] mass;       // [files][sites] N sums each
    private final long[][] tokens;          // [files][sites]

    public MumoeGateStats(int files, List<Key> sites, int experts) {
        if (sites.isEmpty() || experts < 1) {
            throw new IllegalArgumentException("μMoE gate statistics need at least one site and one expert, got "
                    + sites.size() + " sites of " + experts + " experts");
        }
        this.siteLayers = sites.stream().mapToInt(Key::layer).toArray();
        this.siteKinds = sites.stream().mapToInt(k -> k.site().ordinal()).toArray();
        this.experts = experts;
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

    public int experts() {
        return experts;
    }

    public int files() {
        return mass.length;
    }

    /** Adds the gates [T, N] of the term at {@code site} over T tokens of input file {@code file}. */
    public void add(int file, Key site, INDArray gates) {
        int s = sites().indexOf(site);
        if (s < 0) {
            throw new IllegalArgumentException("μMoE gates at layer " + site.layer() + " " + site.site().id()
                    + ", a site the adapter does not have (" + sites() + ")");
        }
        if (gates.rank() != 2 || gates.size(1) != experts) {
            throw new IllegalArgumentException("μMoE gates at layer " + site.layer() + " " + site.site().id()
                    + " have shape " + java.util.Arrays.toString(gates.shape()) + ", expected [T, " + experts + "]");
        }
        int t = (int) gates.size(0);
        double[] a = gates.castTo(DataType.DOUBLE).dup('c').data().asDouble();   // [T, N]
        ExactSums sums = mass[file][s];
        for (int row = 0; row < t; row++) {
            for (int n = 0; n < experts; n++) {
                sums.add(n, a[row * experts + n]);
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
        if (!sameSites(other) || other.experts != experts || other.mass.length != mass.length) {
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
        return java.util.Arrays.equals(siteLayers, other.siteLayers) && java.util.Arrays.equals(siteKinds, other.siteKinds);
    }

    public boolean sameAs(MumoeGateStats other) {
        if (!sameSites(other) || other.experts != experts || other.mass.length != mass.length) {
            return false;
        }
        for (int f = 0; f < mass.length; f++) {
            if (!java.util.Arrays.equals(tokens[f], other.tokens[f])) {
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
