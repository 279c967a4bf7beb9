package org.sparkmoe.adapter;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import org.sparkmoe.model.AdapterTerms.Key;
import org.sparkmoe.model.AdapterTerms.Site;

/**
 * The μMoE experts {@code eval --mute-experts} silences ({@link org.sparkmoe.mumoe.MumoeForm#muted}: W(n, :, :) = 0,
 * the gates unchanged). Written as a comma-separated list of entries {@code L.SITE:N} (expert N of the term beside
 * SITE in decoder layer L, e.g. {@code 0.moe:12}, the form calibrate's mumoe-experts.json gives each file's most
 * specific experts in) or a bare {@code N} (expert N at every adapted site). A hierarchical adapter's expert N is the
 * product (n_1, n_2) numbered row-major, N = n_1·N_2 + n_2.
 *
 * @param entries in the order given, duplicates removed
 */
public record MutedExperts(List<Entry> entries) implements Serializable {
    /** No expert muted. */
    public static final MutedExperts NONE = new MutedExperts(List.of());

    private static final String FLAG = "--mute-experts";

    /** Expert {@code expert} at (layer, site), or at every site when {@code site} is null (layer then -1). */
    public record Entry(int layer, Site site, int expert) implements Serializable {
        boolean at(Key key) {
            return site == null || (key.layer() == layer && key.site() == site);
        }

        @Override
        public String toString() {
            return site == null ? Integer.toString(expert) : layer + "." + site.id() + ":" + expert;
        }
    }

    public MutedExperts {
        entries = List.copyOf(entries.stream().distinct().toList());
    }

    /** Parses {@value #FLAG}'s value; every problem is one line naming the entry and the expected form. */
    public static MutedExperts parse(String csv) {
        List<Entry> out = new ArrayList<>();
        for (String raw : csv.split(",", -1)) {
            String e = raw.trim();
            try {
                int colon = e.indexOf(':');
                if (colon < 0) {
                    out.add(new Entry(-1, null, expert(e)));
                    continue;
                }
                String where = e.substring(0, colon);
                int dot = where.indexOf('.');
                if (dot < 0) {
                    throw new IllegalArgumentException("no '.' between layer and site");
                }
                int layer = Integer.parseInt(where.substring(0, dot));
                if (layer < 0) {
                    throw new IllegalArgumentException("negative layer");
                }
                out.add(new Entry(layer, Site.parse(where.substring(dot + 1), FLAG), expert(e.substring(colon + 1))));
            } catch (IllegalArgumentException ex) {
                throw new IllegalArgumentException(FLAG + ": entry '" + e + "' is not LAYER.SITE:EXPERT (e.g. 0.moe:12) "
                        + "or EXPERT (at every site): " + ex.getMessage());
            }
        }
        return new MutedExperts(out);
    }

    private static int expert(String s) {
        int n = Integer.parseInt(s.trim());
        if (n < 0) {
            throw new IllegalArgumentException("negative expert");
        }
        return n;
    }

    public boolean isEmpty() {
        return entries.isEmpty();
    }

    /** The experts muted at {@code key}, ascending. */
    public int[] at(Key key) {
        Set<Integer> n = new TreeSet<>();
        for (Entry e : entries) {
            if (e.at(key)) {
                n.add(e.expert());
            }
        }
        return n.stream().mapToInt(Integer::intValue).toArray();
    }

    /**
     * Throws (one line naming the entry) unless every entry names a site {@code placements} holds and an expert below
     * {@code experts}.
     */
    public void check(List<MumoeConfig.Placement> placements, int experts) {
        for (Entry e : entries) {
            if (e.expert() >= experts) {
                throw new IllegalArgumentException(FLAG + " " + e + ": the μMoE adapter has " + experts
                        + " experts per site (0.." + (experts - 1) + ")");
            }
            if (e.site() != null && placements.stream().noneMatch(p -> e.at(p.key()))) {
                throw new IllegalArgumentException(FLAG + " " + e + ": the μMoE adapter has no term beside "
                        + e.site().id() + " in layer " + e.layer() + "; its sites are " + placements.stream()
                        .map(p -> p.key().layer() + "." + p.key().site().id()).collect(Collectors.joining(", ")));
            }
        }
    }

    /** The canonical spelling, {@link #parse}'s input form; empty for {@link #NONE}. */
    @Override
    public String toString() {
        return entries.stream().map(Entry::toString).collect(Collectors.joining(","));
    }
}
