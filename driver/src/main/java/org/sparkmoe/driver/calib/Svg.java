package org.sparkmoe.driver.calib;

import java.util.Locale;

/** Small inline SVG charts (no scripts, no external resources) for the calibration report. */
final class Svg {
    private static final int CELL = 26;
    private static final int LABEL_W = 130;
    private static final int BARS_WIDTH = 1100;
    private static final int MAP_WIDTH = 1150;

    private Svg() {
    }

    /**
     * Vertical bars of {@code values} with labels under them and a dashed line at {@code reference} (NaN: none).
     * Bars narrow with their number (34 px down to 4, for about 1100 px in all); values are printed above bars of
     * 24 px and more, and labels thinned to one every 20 px.
     */
    static String bars(String title, double[] values, String[] labels, double reference, String valueFormat) {
        int barW = Math.max(4, Math.min(34, BARS_WIDTH / Math.max(1, values.length)));
        int labelEvery = (int) Math.ceil(20.0 / barW);
        int height = 160;
        int top = 28;
        int width = Math.max(40 + values.length * barW + 10, 12 + 8 * title.length());
        double max = reference > 0 ? reference : 0;
        for (double v : values) {
            max = Math.max(max, v);
        }
        max = max == 0 ? 1 : max * 1.1;
        StringBuilder svg = open(width, top + height + 34, title);
        for (int i = 0; i < values.length; i++) {
            double h = values[i] / max * height;
            int x = 40 + i * barW;
            int gap = Math.max(1, barW / 6);
            svg.append(f("<rect class=\"bar\" x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"#3a7bd5\">"
                    + "<title>%s: %s</title></rect>", x + gap, top + height - h, barW - 2 * gap, h, esc(labels[i]),
                    f(valueFormat, values[i])));
            if (barW >= 24) {
                svg.append(f("<text x=\"%d\" y=\"%.1f\" font-size=\"9\" text-anchor=\"middle\">%s</text>",
                        x + barW / 2, top + height - h - 3, f(valueFormat, values[i])));
            }
            if (i % labelEvery == 0) {
                svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%s</text>",
                        x + barW / 2, top + height + 14, esc(labels[i])));
            }
        }
        if (!Double.isNaN(reference)) {
            double y = top + height - reference / max * height;
            svg.append(f("<line x1=\"36\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#d9534f\" stroke-dasharray=\"4 3\"/>",
                    width - 6, y, y));
        }
        svg.append(f("<line x1=\"36\" x2=\"36\" y1=\"%d\" y2=\"%d\" stroke=\"#333\"/>", top, top + height));
        return svg.append("</svg>").toString();
    }

    /** A heatmap of values[r][c] (white → dark blue over [0, max]), values printed in the cells. */
    static String heatmap(String title, double[][] values, String[] rows, String[] cols, String valueFormat) {
        int width = Math.max(LABEL_W + cols.length * CELL + 10, 12 + 8 * title.length());
        int top = 44;
        double max = 0;
        for (double[] row : values) {
            for (double v : row) {
                max = Math.max(max, v);
            }
        }
        StringBuilder svg = open(width, top + rows.length * CELL + 10, title);
        for (int c = 0; c < cols.length; c++) {
            svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%s</text>",
                    LABEL_W + c * CELL + CELL / 2, top - 6, esc(cols[c])));
        }
        for (int r = 0; r < rows.length; r++) {
            int y = top + r * CELL;
            svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%s</text>", LABEL_W - 6,
                    y + CELL / 2 + 4, esc(rows[r])));
            for (int c = 0; c < cols.length; c++) {
                double t = max == 0 ? 0 : values[r][c] / max;
                int shade = (int) Math.round(255 - 200 * t);
                svg.append(f("<rect class=\"cell\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,255)\" "
                                + "stroke=\"#fff\"><title>%s / %s: %s</title></rect>", LABEL_W + c * CELL, y, CELL, CELL,
                        shade, shade, esc(rows[r]), esc(cols[c]), f(valueFormat, values[r][c])));
                svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"7\" text-anchor=\"middle\" fill=\"%s\">%s</text>",
                        LABEL_W + c * CELL + CELL / 2, y + CELL / 2 + 3, t > 0.6 ? "#fff" : "#000",
                        f(valueFormat, values[r][c]).replaceFirst("^0\\.", ".")));
            }
        }
        return svg.append("</svg>").toString();
    }

    /**
     * A layer × expert map for any size: cells of {@code values[r][c] / reference} (the load against a uniform
     * router) on a log₂ scale from 1/8 to 8, blue below 1, white at 1, red above; exact zeros dark grey. Cells
     * shrink with the column count (26 px down to 6, for about 1150 px) and carry no text, only a tooltip; row and
     * column labels are thinned to one every 12 and 24 px. The {@code <svg>} gets {@code id}; its cells are
     * {@code rect.cell}.
     */
    static String loadMap(String id, String title, double[][] values, double reference, String[] rows, String[] cols,
                          String valueFormat) {
        int cell = Math.max(6, Math.min(26, MAP_WIDTH / Math.max(1, cols.length)));
        int rowEvery = (int) Math.ceil(12.0 / cell);
        int colEvery = (int) Math.ceil(24.0 / cell);
        int left = 70;
        int top = 44;
        String[] marks = {"0", "1/8", "1/4", "1/2", "1", "2", "4", "8"};
        double[] ratios = {0, 0.125, 0.25, 0.5, 1, 2, 4, 8};
        int width = Math.max(Math.max(left + cols.length * cell + 10, 12 + 8 * title.length()),
                left + marks.length * 44 + 70);
        StringBuilder svg = new StringBuilder(f("<svg id=\"%s\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                + "role=\"img\">", esc(id), width, top + rows.length * cell + 40, width, top + rows.length * cell + 40))
                .append(f("<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">%s</text>", esc(title)));
        for (int c = 0; c < cols.length; c += colEvery) {
            svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%s</text>",
                    left + c * cell + cell / 2, top - 6, esc(cols[c])));
        }
        for (int r = 0; r < rows.length; r++) {
            int y = top + r * cell;
            if (r % rowEvery == 0) {
                svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%s</text>", left - 4,
                        y + cell / 2 + 4, esc(rows[r])));
            }
            for (int c = 0; c < cols.length; c++) {
                svg.append(f("<rect class=\"cell\" x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\">"
                                + "<title>%s %s: %s</title></rect>", left + c * cell, y, cell, cell,
                        ratioColour(values[r][c] / reference), esc(rows[r]), esc(cols[c]), f(valueFormat, values[r][c])));
            }
        }
        int legendY = top + rows.length * cell + 12;
        for (int i = 0; i < marks.length; i++) {
            int x = left + i * 44;
            svg.append(f("<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"12\" fill=\"%s\" stroke=\"#999\"/>", x,
                    legendY, ratioColour(ratios[i])));
            svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\">%s</text>", x + 17, legendY + 10, marks[i]));
        }
        svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\">× uniform</text>", left + marks.length * 44,
                legendY + 10));
        return svg.append("</svg>").toString();
    }

    /** Blue (ratio ≤ 1/8) → white (1) → red (≥ 8) on a log₂ scale; dark grey for 0. */
    static String ratioColour(double ratio) {
        if (ratio <= 0) {
            return "#333";
        }
        double t = Math.max(-1, Math.min(1, Math.log(ratio) / Math.log(8)));
        int fade = (int) Math.round(255 - 215 * Math.abs(t));
        return t < 0 ? f("rgb(%d,%d,255)", fade, fade) : f("rgb(255,%d,%d)", fade, fade);
    }

    private static StringBuilder open(int width, int height, String title) {
        return new StringBuilder(f("<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">", width, height,
                width, height))
                .append(f("<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">%s</text>", esc(title)));
    }

    static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;");
    }

    private static String f(String format, Object... args) {
        return String.format(Locale.ROOT, format, args);
    }
}
