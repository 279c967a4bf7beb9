package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Headless Chromium (Debian package {@code chromium}; {@code .ci/run} installs it) driven over the DevTools protocol
 * with the JDK's WebSocket client: load a local page, collect its console errors and uncaught exceptions, evaluate an
 * expression, take a full-page screenshot. Offline: the pages tested load nothing.
 */
final class HeadlessChromium implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Pattern LISTENING = Pattern.compile("DevTools listening on (ws://\\S+)");
    private static final long TIMEOUT_S = 60;

    private final Process process;
    private final Path profile;
    private final WebSocket socket;
    private final Map<Integer, CompletableFuture<JsonNode>> pending = new ConcurrentHashMap<>();
    private final Map<String, CompletableFuture<JsonNode>> awaited = new ConcurrentHashMap<>();
    private final List<String> errors = java.util.Collections.synchronizedList(new ArrayList<>());
    private final AtomicInteger ids = new AtomicInteger();
    private String session;

    /** Starts the browser; fails in one line naming the package when it is not installed. */
    HeadlessChromium() throws Exception {
        String browser = null;
        for (String name : new String[]{"chromium", "chromium-browser", "google-chrome"}) {
            for (String dir : System.getenv().getOrDefault("PATH", "/usr/bin").split(":")) {
                if (browser == null && Files.isExecutable(Path.of(dir, name))) {
                    browser = Path.of(dir, name).toString();
                }
            }
        }
        if (browser == null) {
            throw new IllegalStateException("headless Chromium is needed for the report checks and was not found on "
                    + "PATH (Debian: apt-get install chromium; .ci/run installs it)");
        }
        profile = Files.createTempDirectory("sparkmoe-chromium");
        // --no-sandbox: CI runs as root; the pages are our own files and load nothing
        process = new ProcessBuilder(browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--remote-debugging-port=0", "--remote-allow-origins=*", "--user-data-dir=" + profile,
                "about:blank").redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        String url = browserUrl(process);
        socket = HttpClient.newHttpClient().newWebSocketBuilder().buildAsync(URI.create(url), new Listener())
                .get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** The browser's DevTools endpoint, from the line Chromium prints on stderr. */
    private static String browserUrl(Process process) throws IOException {
        BufferedReader err = new BufferedReader(new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8));
        StringBuilder seen = new StringBuilder();
        for (String line; (line = err.readLine()) != null; ) {
            Matcher m = LISTENING.matcher(line);
            if (m.find()) {
                Thread drain = new Thread(() -> err.lines().forEach(l -> { }), "chromium-stderr");
                drain.setDaemon(true);
                drain.start();
                return m.group(1);
            }
            seen.append(line).append('\n');
        }
        throw new IllegalStateException("chromium exited without a DevTools endpoint:\n" + seen);
    }

    /** The page's outcome: console errors and uncaught exceptions, the expression's value, the screenshot. */
    record Loaded(List<String> errors, JsonNode value, byte[] png) {
    }

    /**
     * Opens {@code page} in a {@code width}-pixel-wide tab, waits for its load event, evaluates {@code expression}
     * and screenshots the whole page (up to 16,000 pixels tall).
     */
    Loaded load(Path page, int width, String expression) throws Exception {
        String target = send(null, "Target.createTarget", JSON.createObjectNode().put("url", "about:blank"))
                .get("targetId").asText();
        session = send(null, "Target.attachToTarget", JSON.createObjectNode().put("targetId", target)
                .put("flatten", true)).get("sessionId").asText();
        send(session, "Runtime.enable", JSON.createObjectNode());
        send(session, "Log.enable", JSON.createObjectNode());
        send(session, "Page.enable", JSON.createObjectNode());
        metrics(width, 1000);
        CompletableFuture<JsonNode> loaded = new CompletableFuture<>();
        awaited.put("Page.loadEventFired", loaded);
        send(session, "Page.navigate", JSON.createObjectNode().put("url", page.toUri().toString()));
        loaded.get(TIMEOUT_S, TimeUnit.SECONDS);
        JsonNode value = send(session, "Runtime.evaluate", JSON.createObjectNode().put("expression", expression)
                .put("returnByValue", true)).path("result").path("value");
        JsonNode layout = send(session, "Page.getLayoutMetrics", JSON.createObjectNode());
        int height = (int) Math.min(16_000, Math.ceil(layout.path("cssContentSize").path("height").asDouble(1000)));
        metrics(width, height);
        String png = send(session, "Page.captureScreenshot", JSON.createObjectNode().put("format", "png"))
                .get("data").asText();
        return new Loaded(List.copyOf(errors), value, Base64.getDecoder().decode(png));
    }

    private void metrics(int width, int height) throws Exception {
        send(session, "Emulation.setDeviceMetricsOverride", JSON.createObjectNode().put("width", width)
                .put("height", height).put("deviceScaleFactor", 1).put("mobile", false));
    }

    private JsonNode send(String sessionId, String method, ObjectNode params) throws Exception {
        int id = ids.incrementAndGet();
        ObjectNode message = JSON.createObjectNode().put("id", id).put("method", method);
        message.set("params", params);
        if (sessionId != null) {
            message.put("sessionId", sessionId);
        }
        CompletableFuture<JsonNode> reply = new CompletableFuture<>();
        pending.put(id, reply);
        socket.sendText(JSON.writeValueAsString(message), true).get(TIMEOUT_S, TimeUnit.SECONDS);
        JsonNode answer = reply.get(TIMEOUT_S, TimeUnit.SECONDS);
        if (answer.has("error")) {
            throw new IllegalStateException(method + " failed: " + answer.get("error"));
        }
        return answer.path("result");
    }

    /** Replies complete their command; console errors, exceptions and error log entries are collected. */
    private final class Listener implements WebSocket.Listener {
        private final StringBuilder partial = new StringBuilder();

        @Override
        public CompletionStage<?> onText(WebSocket webSocket, CharSequence data, boolean last) {
            partial.append(data);
            if (last) {
                try {
                    received(JSON.readTree(partial.toString()));
                } catch (IOException e) {
                    errors.add("unreadable DevTools message: " + e.getMessage());
                }
                partial.setLength(0);
            }
            webSocket.request(1);
            return null;
        }

        private void received(JsonNode m) {
            if (m.has("id")) {
                CompletableFuture<JsonNode> reply = pending.remove(m.get("id").asInt());
                if (reply != null) {
                    reply.complete(m);
                }
                return;
            }
            String method = m.path("method").asText();
            JsonNode p = m.path("params");
            switch (method) {
                case "Runtime.consoleAPICalled" -> {
                    if (p.path("type").asText().matches("error|assert")) {
                        errors.add("console." + p.path("type").asText() + ": " + p.path("args"));
                    }
                }
                case "Runtime.exceptionThrown" -> errors.add("exception: " + p.path("exceptionDetails"));
                case "Log.entryAdded" -> {
                    if (p.path("entry").path("level").asText().equals("error")) {
                        errors.add("log: " + p.path("entry").path("text").asText() + " "
                                + p.path("entry").path("url").asText());
                    }
                }
                default -> {
                }
            }
            CompletableFuture<JsonNode> waiting = awaited.remove(method);
            if (waiting != null) {
                waiting.complete(m);
            }
        }
    }

    @Override
    public void close() throws Exception {
        socket.sendText("{\"id\":" + ids.incrementAndGet() + ",\"method\":\"Browser.close\"}", true); // no wait
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        try (var files = Files.walk(profile)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
    }
}
