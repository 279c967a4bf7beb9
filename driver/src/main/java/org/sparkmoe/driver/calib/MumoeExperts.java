package org.sparkmoe.driver.calib;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.sparkmoe.calib.MumoeGateStats;
import org.sparkmoe.calib.MumoeSpecialisation;
import org.sparkmoe.model.AdapterTerms.Key;

/**
 * The specialisation of a μMoE adapter's experts on the input files ({@link MumoeSpecialisation} per site), as
 * {@code mumoe-experts.json} and as a section of the calibration report. Per site: I(file; expert) and, per file, the
 * tokens, the gate mass per expert, its entropy, effective expert count and top-{@value #TOP} share, and the
 * {@value #TOP} experts most specific to the file. Per file, {@code mute} spells those experts of every site as
 * {@code eval --mute-experts} takes them. A hierarchical adapter's experts are the products (n_1, ..., n_L) of its
 * {@code levels} [N_1, ..., N_L], numbered row-major (n_1·N_2 + n_2 for two levels), as the mute lists and
 * {@code --mute-experts} number them.
 */
final class MumoeExperts {
    static final String FILE = "mumoe-experts.json";
    /** How many experts are listed per file and site, and summed for the top share. */
    static final int TOP = 8;
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private final List<Key> sites;
    private final List<MumoeSpecialisation> views;   // one per site
    private final List<String> fileNames;
    private final int experts;
    private final int[] levels;

    MumoeExperts(MumoeGateStats gates, List<String> fileNames) {
        this.sites = gates.sites();
        this.fileNames = List.copyOf(fileNames);
        this.experts = gates.experts();
        this.levels = gates.levels();
        this.views = new ArrayList<>();
        for (int s = 0; s < sites.size(); s++) {
            double[][] mass = new double[gates.files()][];
            long[] tokens = new long[gates.files()];
            for (int f = 0; f < gates.files(); f++) {
                mass[f] = gates.mass(f, s);
                tokens[f] = gates.tokens(f, s);
            }
            views.add(MumoeSpecialisation.of(mass, tokens, TOP));
        }
    }

    private static String site(Key k) {
        return k.layer() + "." + k.site().id();
    }

    /** File name → its most specific experts at every site, as {@code --mute-experts} takes them. */
    Map<String, String> muteLists() {
        Map<String, String> out = new LinkedHashMap<>();
        for (int f = 0; f < fileNames.size(); f++) {
            List<String> entries = new ArrayList<>();
            for (int s = 0; s < sites.size(); s++) {
                for (int e : views.get(s).files().get(f).specific()) {
                    entries.add(site(sites.get(s)) + ":" + e);
                }
            }
            out.put(fileNames.get(f), String.join(",", entries));
        }
        return out;
    }

    String json(String model, String adapter) {
        ObjectNode root = JSON.createObjectNode();
        root.put("model", model);
        root.put("adapter", adapter);
        root.put("experts", experts);
        ArrayNode dims = root.putArray("levels");
        for (int n : levels) {
            dims.add(n);
        }
        root.put("top", TOP);
        root.put("mutual_information_bound", Math.log(Math.min(fileNames.size(), experts)));
        ArrayNode out = root.putArray("sites");
        for (int s = 0; s < sites.size(); s++) {
            MumoeSpecialisation v = views.get(s);
            ObjectNode site = out.addObject();
            site.put("layer", sites.get(s).layer());
            site.put("site", sites.get(s).site().id());
            site.put("mutual_information", v.mutualInformation());
            ObjectNode files = site.putObject("files");
            for (int f = 0; f < fileNames.size(); f++) {
                MumoeSpecialisation.FileView fv = v.files().get(f);
                ObjectNode file = files.putObject(fileNames.get(f));
                file.put("tokens", fv.tokens());
                file.put("entropy", fv.entropy());
                file.put("effective_experts", fv.effectiveExperts());
                file.put("top_share", fv.topShare());
                ArrayNode specific = file.putArray("specific");
                for (int i = 0; i < fv.specific().length; i++) {
                    ObjectNode e = specific.addObject();
                    e.put("expert", fv.specific()[i]);
                    e.put("share", fv.share()[fv.specific()[i]]);
                    e.put("specificity", fv.specificity()[i]);
                }
                ArrayNode mass = file.putArray("share");
                for (double p : fv.share()) {
                    mass.add(p);
                }
            }
        }
        ObjectNode mute = root.putObject("mute");
        muteLists().forEach(mute::put);
        try {
            return JSON.writeValueAsString(root) + "\n";
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising " + FILE, e);
        }
    }

    /** The report's section: per site I(file; expert), and per file the concentration and most specific experts. */
    String html() {
        StringBuilder out = new StringBuilder("<section><h2>μMoE experts</h2><p>")
                .append(Svg.esc(String.format(Locale.ROOT, "The adapter's %d experts per site%s. I(file; expert): "
                        + "mutual information between a token's file and its soft expert choice (the gates), in nats "
                        + "(at most ln min(files, experts) = %.3f). Effective experts: exp(entropy of the file's gate "
                        + "mass). Most specific: the experts with the largest terms of I, with the file's share of "
                        + "gate mass on each; %s lists them as eval --mute-experts takes them.", experts,
                        levels.length == 1 ? "" : " (the products of levels " + java.util.Arrays.toString(levels)
                                + ", numbered row-major: n1·N2 + n2 for two levels)",
                        Math.log(Math.min(fileNames.size(), experts)), FILE)))
                .append("</p>\n<table><tr><th>site</th><th>I(file; expert)</th><th>file</th><th>tokens</th>"
                        + "<th>effective experts</th><th>top-" + TOP + " share</th><th>most specific</th></tr>\n");
        for (int s = 0; s < sites.size(); s++) {
            MumoeSpecialisation v = views.get(s);
            for (int f = 0; f < fileNames.size(); f++) {
                MumoeSpecialisation.FileView fv = v.files().get(f);
                StringBuilder specific = new StringBuilder();
                for (int e : fv.specific()) {
                    specific.append(String.format(Locale.ROOT, "e%d %.3f ", e, fv.share()[e]));
                }
                out.append(String.format(Locale.ROOT, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%.1f</td>"
                                + "<td>%.3f</td><td style=\"text-align:left\">%s</td></tr>%n",
                        f == 0 ? Svg.esc(site(sites.get(s))) : "",
                        f == 0 ? String.format(Locale.ROOT, "%.4f", v.mutualInformation()) : "",
                        Svg.esc(fileNames.get(f)), fv.tokens(), fv.effectiveExperts(), fv.topShare(),
                        Svg.esc(specific.toString().trim())));
            }
        }
        return out.append("</table></section>\n").toString();
    }
}
