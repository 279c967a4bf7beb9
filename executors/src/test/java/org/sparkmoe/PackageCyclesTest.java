package org.sparkmoe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The executor packages depend one way, in the order of docs/architecture.md: each package uses only packages of
 * lower layers. Read from the sources (imports and fully qualified names in code), so it fails on the first
 * upward use with the file that makes it, and names any cycle.
 */
class PackageCyclesTest {
    /** Layers from the bottom; a package may use packages of lower layers only. */
    static final List<Set<String>> LAYERS = List.of(
            Set.of("io", "text", "cuda"),
            Set.of("kernels"),
            Set.of("routing"),
            Set.of("experts", "mumoe"),
            Set.of("moe"),
            Set.of("model"),
            Set.of("adapter"),
            Set.of("train", "calib"),
            Set.of("surgery"));

    private static final Pattern USE = Pattern.compile("\\borg\\.sparkmoe\\.([a-z]+)\\.");
    private static final Path SOURCES = Path.of("src/main/java/org/sparkmoe");

    @Test
    void everyPackageIsInALayer() {
        Set<String> layered = new TreeSet<>();
        LAYERS.forEach(layered::addAll);
        assertEquals(layered, uses(SOURCES).keySet(), "the executor packages and the layers listed here differ");
    }

    @Test
    void packagesUseOnlyLowerLayers() {
        List<String> upward = upwardUses(uses(SOURCES));
        assertTrue(upward.isEmpty(), "upward uses (package → package, first file):\n" + String.join("\n", upward));
    }

    @Test
    void packageGraphHasNoCycle() {
        List<String> cycle = cycle(graph(uses(SOURCES)));
        assertTrue(cycle.isEmpty(), "package cycle: " + String.join(" → ", cycle));
    }

    /** The checks themselves fail on a graph with an upward edge and a cycle. */
    @Test
    void theChecksCatchAnUpwardEdgeAndACycle() {
        Map<String, Map<String, String>> bad = new TreeMap<>();
        bad.put("routing", new TreeMap<>(Map.of("experts", "routing/Router.java")));
        bad.put("experts", new TreeMap<>(Map.of("routing", "experts/FullExperts.java")));
        assertEquals(List.of("routing → experts (routing/Router.java)"), upwardUses(bad));
        assertEquals(List.of("experts", "routing", "experts"), cycle(graph(bad)));
    }

    /** package → (used package → the first file, by path, that uses it), other packages of org.sparkmoe only. */
    static Map<String, Map<String, String>> uses(Path root) {
        Map<String, Map<String, String>> uses = new TreeMap<>();
        try (Stream<Path> files = Files.walk(root)) {
            for (Path file : files.filter(f -> f.toString().endsWith(".java")).sorted().toList()) {
                Path relative = root.relativize(file);
                String pkg = relative.getName(0).toString();
                Map<String, String> used = uses.computeIfAbsent(pkg, p -> new TreeMap<>());
                for (String line : Files.readAllLines(file)) {
                    String code = line.strip();
                    if (code.startsWith("*") || code.startsWith("/*") || code.startsWith("//")
                            || code.startsWith("package ")) {
                        continue;
                    }
                    Matcher m = USE.matcher(code);
                    while (m.find()) {
                        if (!m.group(1).equals(pkg)) {
                            used.putIfAbsent(m.group(1), relative.toString());
                        }
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return uses;
    }

    static List<String> upwardUses(Map<String, Map<String, String>> uses) {
        List<String> upward = new ArrayList<>();
        uses.forEach((pkg, used) -> used.forEach((target, file) -> {
            if (layer(target) >= layer(pkg)) {
                upward.add(pkg + " → " + target + " (" + file + ")");
            }
        }));
        return upward;
    }

    private static int layer(String pkg) {
        for (int i = 0; i < LAYERS.size(); i++) {
            if (LAYERS.get(i).contains(pkg)) {
                return i;
            }
        }
        throw new IllegalArgumentException("package " + pkg + " is in no layer");
    }

    private static Map<String, Set<String>> graph(Map<String, Map<String, String>> uses) {
        Map<String, Set<String>> g = new TreeMap<>();
        uses.forEach((pkg, used) -> g.put(pkg, new TreeSet<>(used.keySet())));
        return g;
    }

    /** A cycle as a path that ends where it starts, or empty: depth-first search, packages in name order. */
    static List<String> cycle(Map<String, Set<String>> g) {
        Map<String, Integer> state = new TreeMap<>(); // 1 on the path, 2 done
        for (String start : g.keySet()) {
            List<String> path = new ArrayList<>();
            if (visit(start, g, state, path)) {
                return path;
            }
        }
        return List.of();
    }

    private static boolean visit(String pkg, Map<String, Set<String>> g, Map<String, Integer> state,
                                 List<String> path) {
        Integer s = state.get(pkg);
        if (s != null && s == 2) {
            return false;
        }
        if (s != null) {                                   // on the path: the cycle is its tail from pkg
            List<String> loop = new ArrayList<>(path.subList(path.indexOf(pkg), path.size()));
            loop.add(pkg);
            path.clear();
            path.addAll(loop);
            return true;
        }
        state.put(pkg, 1);
        path.add(pkg);
        for (String next : g.getOrDefault(pkg, Set.of())) {
            if (visit(next, g, state, path)) {
                return true;
            }
        }
        path.remove(path.size() - 1);
        state.put(pkg, 2);
        return false;
    }
}
