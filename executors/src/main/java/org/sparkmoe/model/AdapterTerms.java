package org.sparkmoe.model;

import java.util.Collections;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import org.sparkmoe.mumoe.MumoeLayer;

/**
 * The trainable terms an adapter adds beside frozen parts of the model, which the model asks for by layer and site:
 * a μMoE layer ({@link MumoeLayer}) reading what the frozen part reads and adding to what it writes,
 * <pre>
 *   q_proj, k_proj, v_proj:  q = x·Wqᵀ + bq + μMoE(x)          x [B·S, D] the attention's normed input
 *   o_proj:                  o = c·Woᵀ + bo + μMoE(c)          c [B·S, H·hd] the merged heads
 *   moe:                     m = MoE(n) + μMoE(n)              n [B·S, D] the MoE block's normed input
 *   mlp:                     m = MLP(n) + μMoE(n)              n [B·S, D] a dense layer's MLP input
 * </pre>
 * (before q/k/v's per-projection norms, as a LoRA on the projection would be). Immutable; the layers are shared,
 * not copied. {@link #NONE} adds nothing.
 */
public final class AdapterTerms {
    /** Where a term sits: one of the attention's projections, beside a whole MoE block or a whole dense MLP. */
    public enum Site {
        Q_PROJ, K_PROJ, V_PROJ, O_PROJ, MOE, MLP;

        /** q_proj, k_proj, v_proj, o_proj, moe or mlp: the --mumoe-targets and adapter config spelling. */
        public String id() {
            return name().toLowerCase(Locale.ROOT);
        }

        public boolean isAttention() {
            return this != MOE && this != MLP;
        }

        /** The site named {@code id}; throws naming {@code source} and the accepted names otherwise. */
        public static Site parse(String id, String source) {
            for (Site s : values()) {
                if (s.id().equals(id)) {
                    return s;
                }
            }
            throw new IllegalArgumentException(source + ": unknown μMoE target '" + id + "', expected q_proj, k_proj, "
                    + "v_proj, o_proj, moe or mlp" + (id.equals("gate_proj") || id.equals("up_proj")
                    || id.equals("down_proj") ? " (beside a dense MLP's single projections is not built: mlp puts one "
                    + "beside the whole MLP)" : ""));
        }
    }

    /** A site of decoder layer {@code layer}. */
    public record Key(int layer, Site site) {
    }

    public static final AdapterTerms NONE = new AdapterTerms(Map.of());

    private final Map<Key, MumoeLayer> terms;

    /** @param terms the term of each adapted site, iterated in the map's order */
    public AdapterTerms(Map<Key, MumoeLayer> terms) {
        this.terms = Collections.unmodifiableMap(new LinkedHashMap<>(terms));
    }

    /** The term at (layer, site), or null. */
    public MumoeLayer at(int layer, Site site) {
        return terms.get(new Key(layer, site));
    }

    /** Layer {@code layer}'s attention terms by site (q, k, v, o projections that have one). */
    public Map<Site, MumoeLayer> attention(int layer) {
        Map<Site, MumoeLayer> m = new EnumMap<>(Site.class);
        for (Site s : Site.values()) {
            if (s.isAttention() && at(layer, s) != null) {
                m.put(s, at(layer, s));
            }
        }
        return m;
    }

    public Map<Key, MumoeLayer> all() {
        return terms;
    }

    public boolean isEmpty() {
        return terms.isEmpty();
    }
}
