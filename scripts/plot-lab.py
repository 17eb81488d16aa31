#!/usr/bin/env python3
"""Plot network-lab results as an SVG (standard library only).

Reads result lines of the form
    contender=NAME n=N size_mb=64 rate=100mbit seconds=S ideal_seconds=I ratio=R ok=1 ...
from the files given on the command line (other lines are ignored), keeps the ok=1 lines
with the wanted rate and size (lines with host_rates=, i.e. mixed link rates, are skipped),
groups them by contender and N, and draws distribution time / ideal time against N: one
line per contender through the mean of its runs, with a thin bar from min to max where a
point has several runs.

Usage: scripts/plot-lab.py [-o docs/lab-plot.svg] [--rate 100mbit] [--size 64]
                           [--yscale log|linear] FILE...
"""
import argparse
import math
import sys
from collections import defaultdict

TITLE = "64 MiB to N hosts at 100 Mbit/s (ratio to ideal S/R)"

# Fixed styles for the contenders this project talks about; others get the spare ones.
STYLES = {
    "wugui": ("#d62728", "circle", 3.0),
    "bt-libtorrent": ("#1f77b4", "square", 2.2),
    "rsync-pull": ("#2ca02c", "triangle", 2.2),
}
SPARE = [
    ("#9467bd", "diamond", 1.6),
    ("#ff7f0e", "triangle-down", 1.6),
    ("#8c564b", "cross", 1.6),
    ("#e377c2", "circle-open", 1.6),
    ("#7f7f7f", "square-open", 1.6),
    ("#bcbd22", "diamond", 1.6),
    ("#17becf", "triangle", 1.6),
]
ORDER = ["wugui", "bt-libtorrent", "rsync-pull"]


def parse_fields(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def read_runs(paths, rate, size):
    runs = defaultdict(list)  # (contender, n) -> [ratio]
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("contender="):
                    continue
                d = parse_fields(line)
                if d.get("ok") != "1" or "host_rates" in d:
                    continue
                if rate and d.get("rate") != rate:
                    continue
                try:
                    if size is not None and float(d.get("size_mb", "nan")) != size:
                        continue
                    n = int(d["n"])
                    if "seconds" in d and "ideal_seconds" in d and float(d["ideal_seconds"]) > 0:
                        r = float(d["seconds"]) / float(d["ideal_seconds"])
                    else:
                        r = float(d["ratio"])
                except (KeyError, ValueError):
                    print(f"{path}: skipping malformed line: {line.strip()[:80]}", file=sys.stderr)
                    continue
                runs[(d["contender"], n)].append(r)
    return runs


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def fmt(v):
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:g}"


def nice_linear_ticks(lo, hi, want=8):
    span = hi - lo
    raw = span / want
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t = math.floor(lo / step) * step
    ticks = []
    while t <= hi + 1e-9:
        if t >= lo - 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def log_ticks(lo, hi):
    cands = []
    for dec in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 1.5, 2, 3, 4, 6, 8):
            cands.append(m * 10 ** dec)
    ticks = [t for t in cands if lo - 1e-9 <= t <= hi + 1e-9]
    if len(ticks) > 12:
        ticks = [t for t in ticks if str(fmt(t / 10 ** math.floor(math.log10(t))))[0] in "1248"]
    return ticks


def marker(shape, x, y, color, r=4.5):
    fill, stroke = color, "#ffffff"
    if shape.endswith("-open"):
        shape, fill, stroke = shape[:-5], "#ffffff", color
    sw = 1.2 if stroke == "#ffffff" else 1.8
    common = f'fill="{fill}" stroke="{stroke}" stroke-width="{sw}"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {common}/>'
    if shape == "square":
        s = r * 0.9
        return f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}" {common}/>'
    if shape in ("triangle", "triangle-down"):
        k = 1 if shape == "triangle" else -1
        s = r * 1.15
        pts = [(x, y - k * s), (x - s, y + k * s * 0.8), (x + s, y + k * s * 0.8)]
        return f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" {common}/>'
    if shape == "diamond":
        s = r * 1.25
        pts = [(x, y - s), (x + s, y), (x, y + s), (x - s, y)]
        return f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" {common}/>'
    if shape == "cross":
        s = r
        return (f'<path d="M{x - s:.1f},{y - s:.1f}L{x + s:.1f},{y + s:.1f}M{x - s:.1f},{y + s:.1f}'
                f'L{x + s:.1f},{y - s:.1f}" stroke="{color}" stroke-width="2.2" fill="none"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {common}/>'


def render(runs, title, yscale, subtitle):
    contenders = sorted({c for c, _ in runs}, key=lambda c: (ORDER.index(c) if c in ORDER else len(ORDER), c))
    if not contenders:
        raise SystemExit("no matching result lines")
    styles, spare = {}, iter(SPARE * 3)
    for c in contenders:
        styles[c] = STYLES.get(c) or next(spare)

    stats = {}
    for (c, n), rs in runs.items():
        stats[(c, n)] = (sum(rs) / len(rs), min(rs), max(rs), len(rs))
    ns = sorted({n for _, n in runs})
    ymin_data = min(s[1] for s in stats.values())
    ymax_data = max(s[2] for s in stats.values())

    W, H = 960, 600
    L, R, T, B = 78, 28, 74, 92
    pw, ph = W - L - R, H - T - B

    xlo, xhi = 0.0, max(ns) * 1.06 if max(ns) > 1 else 2.0
    if yscale == "log":
        ylo = min(1.0, ymin_data) * 0.9
        yhi = ymax_data * 1.15
        yt = log_ticks(ylo, yhi)

        def Y(v):
            return T + ph - (math.log(v) - math.log(ylo)) / (math.log(yhi) - math.log(ylo)) * ph
    else:
        ylo = 0.0
        yhi = ymax_data * 1.06
        yt = nice_linear_ticks(ylo, yhi)

        def Y(v):
            return T + ph - (v - ylo) / (yhi - ylo) * ph

    def X(v):
        return L + (v - xlo) / (xhi - xlo) * pw

    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">')
    o.append(f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>')
    o.append(f'<text x="{W / 2:.0f}" y="30" text-anchor="middle" font-size="19" font-weight="bold">{esc(title)}</text>')
    if subtitle:
        o.append(f'<text x="{W / 2:.0f}" y="52" text-anchor="middle" font-size="12" fill="#555">{esc(subtitle)}</text>')
    # plot frame and grid
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fbfbfb" stroke="#333" stroke-width="1"/>')
    for t in yt:
        y = Y(t)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#dddddd" stroke-width="1"/>')
        o.append(f'<line x1="{L - 5}" y1="{y:.1f}" x2="{L}" y2="{y:.1f}" stroke="#333"/>')
        o.append(f'<text x="{L - 9}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    for n in ns:
        x = X(n)
        o.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#dddddd" stroke-width="1"/>')
        o.append(f'<line x1="{x:.1f}" y1="{T + ph}" x2="{x:.1f}" y2="{T + ph + 5}" stroke="#333"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 20}" text-anchor="middle">{n}</text>')
    # ideal reference
    if ylo <= 1.0 <= yhi:
        y1 = Y(1.0)
        o.append(f'<line x1="{L}" y1="{y1:.1f}" x2="{L + pw}" y2="{y1:.1f}" stroke="#444" stroke-width="1.2" stroke-dasharray="6,4"/>')
        o.append(f'<text x="{L + pw - 6}" y="{y1 - 6:.1f}" text-anchor="end" font-size="11" fill="#444">ideal = S/R (1.0)</text>')
    # axis titles
    o.append(f'<text x="{L + pw / 2:.0f}" y="{T + ph + 44}" text-anchor="middle" font-size="14">N (receiving hosts)</text>')
    ylab = "distribution time / ideal S/R" + (" (log scale)" if yscale == "log" else "")
    o.append(f'<text transform="translate(22,{T + ph / 2:.0f}) rotate(-90)" text-anchor="middle" font-size="14">{esc(ylab)}</text>')

    # series; dodge markers a few px sideways so coinciding contenders stay visible
    k = len(contenders)
    dodge = 5.0
    labelled = {"wugui": 1, "bt-libtorrent": -1, "rsync-pull": 0}  # 1 below, -1 above, 0 left
    for i, c in enumerate(contenders):
        color, shape, width = styles[c]
        off = (i - (k - 1) / 2) * dodge
        pts = [(n, stats[(c, n)]) for n in ns if (c, n) in stats]
        path = " ".join(f"{'M' if j == 0 else 'L'}{X(n) + off:.1f},{Y(s[0]):.1f}" for j, (n, s) in enumerate(pts))
        dash = '' if c in STYLES else ' stroke-dasharray="5,3"'
        o.append(f'<g id="series-{esc(c)}">')
        o.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{width}" stroke-linejoin="round"{dash}/>')
        for n, (mean, lo, hi, cnt) in pts:
            x = X(n) + off
            if cnt > 1 and Y(lo) - Y(hi) >= 1.0:
                o.append(f'<line x1="{x:.1f}" y1="{Y(lo):.1f}" x2="{x:.1f}" y2="{Y(hi):.1f}" stroke="{color}" stroke-width="1.2"/>')
                for v in (lo, hi):
                    o.append(f'<line x1="{x - 3:.1f}" y1="{Y(v):.1f}" x2="{x + 3:.1f}" y2="{Y(v):.1f}" stroke="{color}" stroke-width="1.2"/>')
            o.append(marker(shape, x, Y(mean), color, 5.5 if c == "wugui" else 4.5))
            o.append(f'<title>{esc(c)} N={n}: mean {mean:.2f} (min {lo:.2f}, max {hi:.2f}, runs {cnt})</title>')
            if c in labelled and n > 1:
                side = labelled[c]
                ty = Y(mean) + (19 if side > 0 else -12 if side < 0 else -4)
                tx, anchor = (x, "middle") if side else (x - 14, "end")
                o.append(f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}" font-size="12" font-weight="bold" '
                         f'fill="{color}" stroke="#ffffff" stroke-width="3" paint-order="stroke">{mean:.2f}</text>')
        o.append('</g>')

    # legend (top left, inside the plot area, where the data leave room)
    lx, ly = L + 16, T + 14
    rows = []
    for c in contenders:
        cnts = sorted({stats[(c, n)][3] for n in ns if (c, n) in stats})
        runs_txt = f"{cnts[0]}" if len(cnts) == 1 else f"{cnts[0]}-{cnts[-1]}"
        rows.append((c, f"{c}  ({runs_txt} run{'s' if cnts[-1] > 1 else ''}/point)"))
    lw = max(len(t) for _, t in rows) * 7.3 + 58
    lh = 22 * len(rows) + 12
    o.append(f'<rect x="{lx}" y="{ly}" width="{lw:.0f}" height="{lh}" fill="#ffffff" fill-opacity="0.93" stroke="#999" rx="4"/>')
    for j, (c, text) in enumerate(rows):
        color, shape, width = styles[c]
        yy = ly + 17 + 22 * j
        dash = '' if c in STYLES else ' stroke-dasharray="5,3"'
        o.append(f'<line x1="{lx + 10}" y1="{yy:.1f}" x2="{lx + 40}" y2="{yy:.1f}" stroke="{color}" stroke-width="{width}"{dash}/>')
        o.append(marker(shape, lx + 25, yy, color))
        weight = ' font-weight="bold"' if c == "wugui" else ''
        o.append(f'<text x="{lx + 50}" y="{yy + 4.5:.1f}"{weight}>{esc(text)}</text>')

    o.append(f'<text x="{L}" y="{H - 14}" font-size="11" fill="#555">Line = mean of the runs; thin bar = min-max where a point has '
             f'several runs; markers nudged sideways a few px so that coinciding contenders stay visible.</text>')
    o.append('</svg>')
    return "\n".join(o) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="result files (lines starting with contender=)")
    ap.add_argument("-o", "--output", default="docs/lab-plot.svg", help="SVG to write (default %(default)s)")
    ap.add_argument("--rate", default="100mbit", help="keep lines with this rate= ('' = all; default %(default)s)")
    ap.add_argument("--size", type=float, default=64, help="keep lines with this size_mb= (default %(default)s)")
    ap.add_argument("--yscale", choices=("log", "linear"), default="log", help="y axis scale (default %(default)s)")
    ap.add_argument("--title", default=TITLE)
    ap.add_argument("--subtitle", default=None, help="small line under the title (default: the input files)")
    a = ap.parse_args()
    runs = read_runs(a.files, a.rate, a.size)
    sub = a.subtitle if a.subtitle is not None else "data: " + ", ".join(p.rsplit("/", 1)[-1] for p in a.files)
    svg = render(runs, a.title, a.yscale, sub)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write(svg)
    for (c, n) in sorted(runs, key=lambda k: (k[0], k[1])):
        rs = runs[(c, n)]
        print(f"{c:16s} n={n:<3d} mean={sum(rs) / len(rs):6.2f} min={min(rs):6.2f} max={max(rs):6.2f} runs={len(rs)}")
    print(f"wrote {a.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
