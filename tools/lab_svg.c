/* The lab's pictures, written as plain SVG text: a heap map (the heap's
 * address range as one long bar wrapped into rows, each block a coloured
 * span) and a bar chart of utilization and throughput per engine. */
#include "lab.h"
#include <string.h>

#define HK_MIN(a, b) ((a) < (b) ? (a) : (b))

enum { MAP_W = 1000, MAP_ROWS = 24, ROW_H = 18, ROW_GAP = 5, MAP_X = 10, MAP_Y = 86 };

static const char *const C_PAYLOAD[2] = { "#2f6fc4", "#4d8fe0" };  /* alternate so neighbours show */
static const char *const C_OVERHEAD = "#f0a030";
static const char *const C_FREE = "#dcdcdc";

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else fputc(*s, f);
    }
}

/* Draws bytes [off, off+len) of the heap, split over the rows it crosses. */
static void span(FILE *f, size_t off, size_t len, size_t per_row, const char *color)
{
    while (len > 0) {
        size_t row = off / per_row;
        if (row >= MAP_ROWS) return;
        size_t take = HK_MIN(len, (row + 1) * per_row - off);
        double x = MAP_X + (double)(off - row * per_row) / (double)per_row * MAP_W;
        double w = (double)take / (double)per_row * MAP_W;
        if (w < 0.15) w = 0.15;   /* keep tiny blocks visible as hairlines */
        fprintf(f, "<rect x=\"%.2f\" y=\"%zu\" width=\"%.2f\" height=\"%d\" fill=\"%s\"/>\n",
                x, MAP_Y + row * (ROW_H + ROW_GAP), w, ROW_H, color);
        off += take;
        len -= take;
    }
}

static void human(char *buf, size_t cap, size_t n)
{
    if (n >= (size_t)10 << 20) snprintf(buf, cap, "%.1f MiB", (double)n / (1 << 20));
    else if (n >= (size_t)10 << 10) snprintf(buf, cap, "%.1f KiB", (double)n / 1024);
    else snprintf(buf, cap, "%zu B", n);
}

int lab_svg_heapmap(const char *path, const char *engine, const char *trace,
                    const lab_span_t *spans, size_t n, size_t footprint, double util)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    size_t extent = footprint;
    for (size_t i = 0; i < n; i++) if (spans[i].off + spans[i].size > extent) extent = spans[i].off + spans[i].size;
    if (!extent) extent = 1;
    size_t per_row = (extent + MAP_ROWS - 1) / MAP_ROWS;
    int h = MAP_Y + MAP_ROWS * (ROW_H + ROW_GAP) + 10;
    size_t used = 0, payload = 0, free_b = 0, n_free = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].in_use) { used += spans[i].size; payload += spans[i].payload; }
        else { free_b += spans[i].size; n_free++; }
    }
    char fp[32], rowb[32], pb[32], ob[32], fb[32];
    human(fp, sizeof fp, footprint);
    human(rowb, sizeof rowb, per_row);
    human(pb, sizeof pb, payload);
    human(ob, sizeof ob, used - payload);
    human(fb, sizeof fb, free_b);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"13\">\n",
            MAP_W + 2 * MAP_X, h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"22\" font-size=\"17\" font-weight=\"bold\">", MAP_X);
    xml_text(f, engine);
    fputs(" on ", f);
    xml_text(f, trace);
    fprintf(f, ": heap at its peak footprint</text>\n");
    fprintf(f, "<text x=\"%d\" y=\"42\">footprint %s, utilization %.1f%% (live requested bytes / footprint now), %zu blocks, one row = %s</text>\n",
            MAP_X, fp, util * 100, n, rowb);
    int lx = MAP_X;
    const struct { const char *c; const char *label; const char *v; } leg[] = {
        { C_PAYLOAD[0], "requested bytes", pb }, { C_OVERHEAD, "headers, padding, rounding", ob }, { C_FREE, "free blocks", fb },
    };
    for (size_t i = 0; i < 3; i++) {
        fprintf(f, "<rect x=\"%d\" y=\"54\" width=\"14\" height=\"14\" fill=\"%s\" stroke=\"#888\"/><text x=\"%d\" y=\"66\">%s: %s</text>\n",
                lx, leg[i].c, lx + 20, leg[i].label, leg[i].v);
        lx += 300;
    }
    for (int r = 0; r < MAP_ROWS; r++)   /* the bar's background: address space not yet walked */
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#bbb\" stroke-width=\"0.5\"/>\n",
                MAP_X, MAP_Y + r * (ROW_H + ROW_GAP), MAP_W, ROW_H);
    size_t k_used = 0;
    for (size_t i = 0; i < n; i++) {
        const lab_span_t *s = &spans[i];
        if (!s->in_use) { span(f, s->off, s->size, per_row, C_FREE); continue; }
        span(f, s->off, s->size, per_row, C_OVERHEAD);
        if (s->payload) span(f, s->off + s->pay_off, s->payload, per_row, C_PAYLOAD[k_used++ & 1]);
    }
    fputs("</svg>\n", f);
    return fclose(f) ? -1 : 0;
}

int lab_svg_chart(const char *path, const lab_result_t *res, size_t n_res,
                  const char *const *engines, size_t n_engines)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    double util[64] = { 0 }, kops[64] = { 0 }, max_kops = 1;
    if (n_engines > 64) n_engines = 64;
    for (size_t e = 0; e < n_engines; e++) {
        double su = 0, ops = 0, secs = 0;
        int nu = 0;
        for (size_t i = 0; i < n_res; i++) {
            if (strcmp(res[i].engine, engines[e]) || !res[i].ok) continue;
            su += res[i].utilization; nu++;
            ops += res[i].ops_per_sec * res[i].seconds; secs += res[i].seconds;
        }
        util[e] = nu ? su / nu : 0;
        kops[e] = secs > 0 ? ops / secs / 1000 : 0;
        if (kops[e] > max_kops) max_kops = kops[e];
    }
    const int label_w = 140, bar_w = 330, gap = 60, bar_h = 20, top = 60;
    int w = 2 * (label_w + bar_w) + gap + 80, h = top + (int)n_engines * (bar_h + 8) + 30;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"13\">\n", w, h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"10\" y=\"22\" font-size=\"17\" font-weight=\"bold\">heapkit lab: engines compared</text>\n");
    int px[2] = { 10 + label_w, 10 + label_w + bar_w + gap + label_w };
    const char *title[2] = { "average utilization (%, higher is better)", "throughput (Kops/s, higher is better)" };
    const char *color[2] = { "#2f6fc4", "#3a9a5b" };
    for (int p = 0; p < 2; p++) {
        fprintf(f, "<text x=\"%d\" y=\"46\" font-weight=\"bold\">%s</text>\n", px[p] - label_w, title[p]);
        for (size_t e = 0; e < n_engines; e++) {
            double v = p == 0 ? util[e] * 100 : kops[e], frac = p == 0 ? util[e] : kops[e] / max_kops;
            if (frac > 1) frac = 1;
            int y = top + (int)e * (bar_h + 8);
            fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", px[p] - 6, y + 15);
            xml_text(f, engines[e]);
            fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n",
                    px[p], y, frac * bar_w, bar_h, color[p]);
            fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.*f</text>\n", px[p] + frac * bar_w + 4, y + 15, p == 0 ? 1 : 0, v);
        }
    }
    fputs("</svg>\n", f);
    return fclose(f) ? -1 : 0;
}
