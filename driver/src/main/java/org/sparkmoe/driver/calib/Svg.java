package org.sparkmoe.driver.calib;

import java.util.Locale;

/** Small inline SVG charts (no scripts, no external resources) for the calibration report. */
final class Svg {
    private static final int CELL = 26;
    private static final int LABEL_W = 130;

    private Svg() {
    }

    /** Vertical bars of {@code values} with labels under them and a dashed line at {@code reference} (NaN: none). */
    static String bars(String title, double[] values, String[] labels, double reference, String valueFormat) {
        int barW = 34;
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
            svg.append(f("<rect class=\"bar\" x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"#3a7bd5\">"
                    + "<title>%s: %s</title></rect>", x + 3, top + height - h, barW - 6, h, esc(labels[i]),
                    f(valueFormat, values[i])));
            svg.append(f("<text x=\"%d\" y=\"%.1f\" font-size=\"9\" text-anchor=\"middle\">%s</text>", x + barW / 2,
                    top + height - h - 3, f(valueFormat, values[i])));
            svg.append(f("<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%s</text>", x + barW / 2,
                    top + height + 14, esc(labels[i])));
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
