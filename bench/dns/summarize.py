"""Summarizes one `dnsperf -v` run as a markdown table row, or (with
--ratios) prints muster/Knot ratios from the finished table."""
import re
import sys

if sys.argv[1] == "--ratios":
    rows = {}
    for line in open(sys.argv[2]):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[1] in ("muster", "knot"):
            rows[(cells[0], cells[1])] = (float(cells[2]), float(cells[5]))
    for w in sorted({w for w, _ in rows}):
        m, k = rows.get((w, "muster")), rows.get((w, "knot"))
        if m and k:
            print(f"{w}: muster/knot QPS = {m[0] / k[0]:.2f}; p99 muster {m[1]} ms vs knot {k[1]} ms")
    sys.exit(0)

label, path = sys.argv[1], sys.argv[2]
text = open(path, errors="replace").read()
lat = sorted(float(m) for m in re.findall(r"^> \S+ \S+ \S+ ([0-9.]+)$", text, re.M))
qps = re.search(r"Queries per second:\s+([0-9.]+)", text)
lost = re.search(r"Queries lost:\s+(\d+)", text)
codes = re.search(r"Response codes:\s+(.*)", text)
avg = re.search(r"Average Latency \(s\):\s+([0-9.]+)", text)
if not (qps and lat):
    print(f"| {label.replace(' ', ' | ')} | failed: see {path} | | | | | |")
    sys.exit(0)


def pct(p):
    return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000


workload, server = label.split(" ")
print(f"| {workload} | {server} | {float(qps.group(1)):.0f} | {float(avg.group(1)) * 1000:.2f} | "
      f"{pct(0.50):.2f} | {pct(0.99):.2f} | {lost.group(1) if lost else '?'} | {codes.group(1).strip() if codes else '?'} |")
