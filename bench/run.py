#!/usr/bin/env python3
"""Benchmark runner: runs every workload under every allocator by LD_PRELOAD,
interleaved (rep 1 of everything, then rep 2, ...), takes the median wall
time and peak RSS (wait4's ru_maxrss of the child) and prints ratio tables."""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = [
    ("mimalloc", LIBDIR + "/libmimalloc.so.2", "libmimalloc2.0"),
    ("jemalloc", LIBDIR + "/libjemalloc.so.2", "libjemalloc2"),
    ("tcmalloc", LIBDIR + "/libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
]
TIME = "/usr/bin/time"
HAVE_TIME = os.access(TIME, os.X_OK)
APT = "apt-get install libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4"


def workloads(ncores):
    rows = [("small", "small", [1]), ("realloc", "realloc", [1]),
            ("large", "large", [1]), ("shrink", "shrink", [1])]
    for prog in ("prodcons", "server", "falseshare", "churn", "midsize"):
        for t in sorted({ncores, 2 * ncores}):
            rows.append((f"{prog}-t{t}", prog, [t]))
    return rows


def evict_from_page_cache(path):
    """Drop a preloaded library's pages from the page cache, so every
    allocator's library is mapped from pages read back the same way. A
    library just written by the linker sits in the page cache in the folios
    of that write, and a fault then maps more of its text at once: a fresh
    libheapkit.so showed 128 KiB of text resident in `falseshare-t2`
    instead of 80 KiB (the same file after its pages were dropped and read
    back), 48 KiB of peak RSS that only the build left there."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        pass


def run_one(binary, args, preload, scale):
    """Run one workload; returns (exit code, wall s, peak RSS KiB, stdout, stderr).
    Peak RSS comes from /usr/bin/time (wait4 in a small parent): a child forked
    straight from python would inherit python's RSS high-water mark across exec."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    argv = [binary] + [str(x) for x in args] + [str(scale)]
    with tempfile.NamedTemporaryFile("r", prefix="hkbench-") as tf:
        if HAVE_TIME:
            argv = [TIME, "-q", "-f", "%M", "-o", tf.name] + argv
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        rss = 0
        if HAVE_TIME:
            txt = tf.read().split()
            rss = int(txt[-1]) if txt and txt[-1].isdigit() else 0
    return (p.returncode, wall, rss, p.stdout.decode(errors="replace").strip(),
            p.stderr.decode(errors="replace").strip())


def canonical(line):
    """The workload's output minus the fields that legitimately vary."""
    return " ".join(f for f in line.split() if not f.startswith("rss_"))


def field(line, key):
    for f in line.split():
        if f.startswith(key + "="):
            try:
                return int(f.split("=", 1)[1])
            except ValueError:
                return None
    return None


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def fmt_table(title, rows, allocs, med, unit_fmt, ref_names):
    """One table: per workload the median per allocator with ratios to the
    reference allocators (glibc, heapkit when present)."""
    refs = [r for r in ref_names if r in allocs]
    head = f"{title} — median; in brackets the ratio to " + " and ".join(refs)
    lines = [head]
    w0 = max(12, max(len(r) for r in rows) + 2)
    cw = 24
    lines.append("workload".ljust(w0) + "".join(a.rjust(cw) for a in allocs))
    ratios = {a: {r: [] for r in refs} for a in allocs}
    for wl in rows:
        cells = []
        for a in allocs:
            v = med.get((wl, a))
            if v is None:
                cells.append("FAIL".rjust(cw))
                continue
            rs = []
            for r in refs:
                base = med.get((wl, r))
                if base:
                    q = v / base
                    ratios[a][r].append(q)
                    rs.append(f"{q:.2f}")
                else:
                    rs.append("-")
            cells.append((unit_fmt(v) + " (" + "/".join(rs) + ")").rjust(cw))
        lines.append(wl.ljust(w0) + "".join(cells))
    cells = []
    for a in allocs:
        gm = [f"{geomean(ratios[a][r]):.2f}" for r in refs]
        cells.append(("(" + "/".join(gm) + ")").rjust(cw))
    lines.append("geomean".ljust(w0) + "".join(cells))
    return "\n".join(lines), ratios


def best_peer_table(rows, allocs, tmed, samples):
    """Time of heapkit (and of every --lib build) over the fastest peer's on
    each workload: the issue's "no workload slower than 1.25x the best peer".
    Two figures per cell: the ratio of the medians, and the median over the
    repetitions of the ratio within one repetition (each run against the
    fastest peer's run of the same round). The machine's speed drifts
    between rounds; the paired figure cancels that drift."""
    peers = [a for a in allocs if a == "glibc" or a in {p[0] for p in PEERS}]
    ours = [a for a in allocs if a not in peers]
    if not peers or not ours:
        return ""
    w0 = max(12, max(len(r) for r in rows) + 2)
    cw = 24
    lines = ["TIME OVER THE FASTEST PEER (" + ", ".join(peers) + "): ratio of medians / median of per-round ratios",
             "workload".ljust(w0) + "best peer".rjust(cw) + "".join(a.rjust(cw) for a in ours)]
    worst = {a: (0.0, "") for a in ours}
    for wl in rows:
        have = [(tmed[(wl, p)], p) for p in peers if tmed.get((wl, p))]
        if not have:
            continue
        bv, bp = min(have)
        by_rep = {}
        for p in peers:
            for x in samples.get((wl, p), []):
                by_rep[x[3]] = min(by_rep.get(x[3], x[0]), x[0])
        cells = [f"{bp} {bv:.3f}".rjust(cw)]
        for a in ours:
            v = tmed.get((wl, a))
            if v is None:
                cells.append("FAIL".rjust(cw))
                continue
            q = v / bv
            paired = [x[0] / by_rep[x[3]] for x in samples.get((wl, a), []) if x[3] in by_rep]
            pq = statistics.median(paired) if paired else float("nan")
            m = max(q, pq)
            if m > worst[a][0]:
                worst[a] = (m, wl)
            cells.append(f"{q:.2f} / {pq:.2f}{' *' if m > 1.25 else '  '}".rjust(cw))
        lines.append(wl.ljust(w0) + "".join(cells))
    lines.append("worst".ljust(w0) + "".rjust(cw) + "".join(f"{worst[a][0]:.2f} {worst[a][1]}".rjust(cw) for a in ours))
    lines.append("(* either figure over 1.25x)")
    return "\n".join(lines)


def with_geomean(rows, allocs, med):
    """The rows plus a 'geomean' row whose values are the geometric mean of
    each allocator's ratios to glibc (glibc's own value is then 1)."""
    out = dict(med)
    for a in allocs:
        qs = [med[(w, a)] / med[(w, "glibc")] for w in rows if med.get((w, a)) and med.get((w, "glibc"))]
        if qs:
            out[("geomean", a)] = geomean(qs)
    return rows + ["geomean"], out


def svg_chart(path, rows, allocs, tmed, rmed):
    if "glibc" in allocs:
        _, tmed = with_geomean(rows, allocs, tmed)
        rows, rmed = with_geomean(rows, allocs, rmed)
    colors = ["#777777", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    bar = 9
    group = bar * len(allocs) + 14
    left, top, panel_h = 60, 50, 220
    width = left + group * len(rows) + 30
    height = top + 2 * (panel_h + 90) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">heapkit benchmarks: median time and peak RSS relative to glibc (lower is better)</text>']
    for i, a in enumerate(allocs):
        out.append(f'<rect x="{left + i * 110}" y="30" width="10" height="10" fill="{colors[i % len(colors)]}"/>'
                   f'<text x="{left + i * 110 + 14}" y="39">{a}</text>')
    for pi, (name, med) in enumerate((("time", tmed), ("peak RSS", rmed))):
        y0 = top + 20 + pi * (panel_h + 90)
        vals = [med[(w, a)] / med[(w, "glibc")] for w in rows for a in allocs
                if med.get((w, a)) and med.get((w, "glibc"))]
        vmax = max([2.0] + vals)
        vmax = min(vmax, 4.0)
        scale = panel_h / vmax
        base = y0 + panel_h
        out.append(f'<text x="5" y="{y0 - 14}" font-size="12">{name} / glibc (bars above {vmax:.1f} are cut)</text>')
        for tick in [x * 0.5 for x in range(int(vmax / 0.5) + 1)]:
            y = base - tick * scale
            out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="{"#000" if tick == 1.0 else "#ddd"}"/>'
                       f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
        for wi, w in enumerate(rows):
            gx = left + 7 + wi * group
            for ai, a in enumerate(allocs):
                v, g = med.get((w, a)), med.get((w, "glibc"))
                if not v or not g:
                    continue
                q = v / g
                h = min(q, vmax) * scale
                out.append(f'<rect x="{gx + ai * bar}" y="{base - h:.1f}" width="{bar - 1}" height="{h:.1f}" '
                           f'fill="{colors[ai % len(colors)]}"><title>{w} {a}: {q:.2f}</title></rect>')
            out.append(f'<text transform="translate({gx + 2},{base + 12}) rotate(35)">{w}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smaller workloads, 2 repetitions")
    ap.add_argument("--scale", type=float, help="work multiplier (default 1, 0.25 with --quick)")
    ap.add_argument("--svg")
    ap.add_argument("--json")
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--allocators", help="comma-separated allocator names")
    ap.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                    help="one more allocator to preload (e.g. another heapkit build); repeatable")
    a = ap.parse_args()
    reps = a.reps or (2 if a.quick else 5)
    scale = a.scale or (0.25 if a.quick else 1.0)
    bindir = os.path.join(a.build, "bench")
    if not os.path.isdir(bindir):
        sys.exit(f"run.py: no {bindir}: build first (make build)")

    allocs = [("glibc", None)]
    for name, lib, pkg in PEERS:
        if os.path.exists(lib):
            allocs.append((name, lib))
        else:
            print(f"note: {name} not found ({lib}); install it with: {APT}", file=sys.stderr)
    hk = os.path.abspath(os.path.join(a.build, "libheapkit.so"))
    if os.path.exists(hk):
        allocs.append(("heapkit", hk))
    else:
        print(f"note: {hk} not built; comparing the others only", file=sys.stderr)
    for spec in a.lib:
        name, sep, path = spec.partition("=")
        if not sep or not name or not os.path.exists(path):
            sys.exit(f"run.py: --lib {spec}: want NAME=PATH of an existing library")
        allocs.append((name, os.path.abspath(path)))
    if a.allocators:
        want = a.allocators.split(",")
        allocs = [x for x in allocs if x[0] in want]
    names = [n for n, _ in allocs]
    for _, lib in allocs:
        if lib:
            evict_from_page_cache(lib)

    if not HAVE_TIME:
        print(f"note: {TIME} missing (apt-get install time): peak RSS not measured", file=sys.stderr)
    ncores = os.cpu_count() or 1
    rows = workloads(ncores)
    if a.only:
        want = a.only.split(",")
        rows = [r for r in rows if r[0] in want or r[1] in want]

    samples = {}   # (wl, alloc) -> list of (wall, maxrss_kb, line, rep)
    failures = []
    ref_line = {}
    t_start = time.time()
    for rep in range(reps):
        print(f"rep {rep + 1}/{reps} ({time.time() - t_start:.0f} s)", file=sys.stderr)
        for wl, prog, args in rows:
            # rotate the allocator order each rep so no allocator always runs
            # right after the same neighbour
            order = allocs[rep % len(allocs):] + allocs[:rep % len(allocs)]
            for name, lib in order:
                rc, wall, rss, line, err = run_one(os.path.join(bindir, prog), args, lib, scale)
                if rc != 0:
                    failures.append(f"{wl} under {name}: exit {rc}: {err[-300:]}")
                    continue
                c = canonical(line)
                if wl in ref_line and ref_line[wl][1] != c:
                    failures.append(f"{wl} under {name}: output differs from {ref_line[wl][0]}: '{line}' vs '{ref_line[wl][1]}'")
                ref_line.setdefault(wl, (name, c))
                samples.setdefault((wl, name), []).append((wall, rss, line, rep))

    wl_names = [r[0] for r in rows]
    tmed, rmed, after = {}, {}, {}
    for (wl, name), s in samples.items():
        tmed[(wl, name)] = statistics.median(x[0] for x in s)
        rmed[(wl, name)] = statistics.median(x[1] for x in s)
        ra = [field(x[2], "rss_after_kb") for x in s]
        ra = [x for x in ra if x is not None]
        if ra:
            after[(wl, name)] = statistics.median(ra)

    refs = ["glibc", "heapkit"]
    print(f"\nheapkit bench: {len(rows)} workloads x {len(names)} allocators x {reps} reps, scale {scale}, "
          f"{ncores} cores, {time.time() - t_start:.0f} s\n")
    t_text, _ = fmt_table("TIME (s)", wl_names, names, tmed, lambda v: f"{v:.3f}", refs)
    r_text, _ = fmt_table("PEAK RSS (MiB)", wl_names, names, rmed, lambda v: f"{v / 1024:.1f}", refs)
    print(t_text + "\n\n" + r_text)
    b_text = best_peer_table(wl_names, names, tmed, samples)
    if b_text:
        print("\n" + b_text)
    if after:
        a_rows = sorted({w for w, _ in after})
        x_text, _ = fmt_table("RSS AFTER FREEING 90% (MiB)", a_rows, names, after, lambda v: f"{v / 1024:.1f}", refs)
        print("\n" + x_text)
    if failures:
        print("\nFAILURES:")
        for f in failures:
            print("  " + f)
    if a.svg:
        svg_chart(a.svg, wl_names, names, tmed, rmed)
        print(f"\nsvg written to {a.svg}")
    if a.json:
        doc = {"reps": reps, "scale": scale, "cores": ncores, "allocators": dict(allocs),
               "results": [{"workload": wl, "allocator": n, "median_s": tmed.get((wl, n)),
                            "median_maxrss_kb": rmed.get((wl, n)), "rss_after_kb": after.get((wl, n)),
                            "samples": [{"wall_s": x[0], "maxrss_kb": x[1], "line": x[2]}
                                        for x in samples.get((wl, n), [])]}
                           for wl in wl_names for n in names],
               "failures": failures}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"json written to {a.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
