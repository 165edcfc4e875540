#!/usr/bin/env python3
"""Chart of kiln_bench --json output: per suite, each row's fraction of the roofline
(min(sgemm peak, FLOP/byte x copy bandwidth), both measured by kiln_bench at start) as a
horizontal bar. Writes SVG by hand (no matplotlib, no network needed).

    kiln_bench --suite all --compare --json /tmp/bench.json
    python3 benchmarks/plot_roofline.py /tmp/bench.json -o docs/bench_cpu.svg [--title "..."]

Bars are capped at 150% (rows whose data fit in the cache can pass 100%); the number
printed is the real fraction. A row whose timing ran beside other work (other > 10%) is
drawn hatched-grey and marked "!". With --compare data, the PyTorch time ratio is shown.
"""
import argparse
import html
import json
import sys

BAR_W, LABEL_W, ROW_H, CAP = 420, 190, 16, 1.5


def suites_of(report):
    if "suites" in report:
        return [(s["suite"], s["rows"]) for s in report["suites"]]
    return [(report["suite"], report["rows"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json_file")
    ap.add_argument("-o", "--output", required=True, help="SVG file to write")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    try:  # a missing or unreadable report is one line, not a traceback
        with open(args.json_file) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot_roofline.py: cannot read {args.json_file}: {e}")
    m = report.get("machine", {})
    title = args.title or f"kiln_bench: fraction of the roofline ({m.get('device', m.get('cpu', '?'))}, {m.get('threads', '?')} threads)"
    # Rows are judged against the peak of their math (fp32, TF32, bf16: the row's "math"); runs
    # before 2026-12-04 recorded the fp32 peak alone.
    others = "".join(f", {name} peak {m[key]:.1f}" for name, key in (("TF32", "peak_tf32_gflops"), ("bf16", "peak_bf16_gflops"))
                     if m.get(key) and m.get(key) != m.get("peak_gflops"))  # a CPU's TF32 peak is its fp32 one
    sub = (f"limits measured in the run: fp32 peak {m.get('peak_gflops', 0):.1f} GFLOP/s ({m.get('peak_from', '')}){others}, "
           f"bandwidth {m.get('bandwidth_gbs', 0):.1f} GB/s ({m.get('bandwidth_from', '')}); load average {m.get('loadavg', '?')}")

    out, y = [], 58
    x0 = LABEL_W
    for suite, rows in suites_of(report):
        timed = [r for r in rows if "fraction_of_roof" in r]
        if not timed:
            continue
        y += 10
        out.append(f'<text x="8" y="{y + 12}" font-weight="bold" font-size="13">{html.escape(suite)}</text>')
        y += 18
        for r in timed:
            frac = r["fraction_of_roof"] or 0.0
            w = BAR_W * min(frac, CAP) / CAP
            noisy = (r.get("other_load") or 0) > 0.10
            colour = "#9aa4ad" if noisy else ("#2b7bb9" if frac >= 0.8 else "#e08a2e")
            out.append(f'<text x="{x0 - 6}" y="{y + 11}" text-anchor="end" font-size="11">{html.escape(r["name"])}</text>')
            out.append(f'<rect x="{x0}" y="{y + 2}" width="{w:.1f}" height="{ROW_H - 4}" fill="{colour}"'
                       + (' fill-opacity="0.7" stroke="#555" stroke-dasharray="2,2"' if noisy else "") + "/>")
            label = f"{100 * frac:.0f}%{' !' if noisy else ''}"
            rate = f"{r['gflops']:.1f} GFLOP/s" if r.get("flops") and r["flops"] / max(r["bytes"], 1) > 1 else f"{r['gbs']:.1f} GB/s"
            label += f"  {rate}, {r['median_ms']:.3g} ms"
            if "ratio_torch_over_kiln" in r:
                label += f", torch/kiln {r['ratio_torch_over_kiln']:.2f}"
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 11}" font-size="10" fill="#333">{html.escape(label)}</text>')
            y += ROW_H
    height = y + 40
    width = x0 + BAR_W + 330
    grid = []
    for f in (0.25, 0.5, 0.8, 1.0, 1.25, 1.5):
        gx = x0 + BAR_W * f / CAP
        stroke = "#c33" if f == 1.0 else ("#c33" if f == 0.8 else "#ddd")
        dash = ' stroke-dasharray="4,3"' if f == 0.8 else ""
        grid.append(f'<line x1="{gx:.1f}" y1="58" x2="{gx:.1f}" y2="{y}" stroke="{stroke}"{dash}/>')
        grid.append(f'<text x="{gx:.1f}" y="{y + 14}" text-anchor="middle" font-size="10">{int(f * 100)}%</text>')
    legend = ("blue: at least 80% of the roof; orange: below; grey dashed, \"!\": other processes took over 10% of "
              "the CPUs while timing (not trustworthy). Red line: the roof; dashed: 80%.")
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
           f'<text x="8" y="34" font-size="10">{html.escape(sub)}</text>',
           f'<text x="8" y="48" font-size="10">{html.escape(legend)}</text>',
           *grid, *out,
           f'<text x="{x0}" y="{y + 30}" font-size="10">fraction of min(peak of the row\'s math, FLOP/byte x bandwidth); bars capped at '
           f'{int(CAP * 100)}%</text>',
           "</svg>"]
    with open(args.output, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
