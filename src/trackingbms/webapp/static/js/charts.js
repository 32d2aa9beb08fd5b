// History charts over the server's downsampled history (uPlot, vendored).

import { chartDate, num, t } from "./i18n.js";
import { h } from "./util.js";

/** Which history series each chart draws: [series name, aggregate, label key, colour]; titles are keys. */
export const CHARTS = [
  { id: "voltage", title: "chart.voltage", unit: "V", digits: 2, lines: [["voltage_v", "mean", "chart.voltage", "#0f5d8c"]] },
  {
    id: "current",
    title: "chart.current",
    unit: "A",
    digits: 1,
    zero: true,
    lines: [["current_a", "mean", "chart.current", "#b4531a"]],
  },
  { id: "soc", title: "chart.soc", unit: "%", digits: 0, range: [0, 100], lines: [["soc_pct", "mean", "chart.soc_short", "#2e7d32"]] },
  {
    id: "delta",
    title: "chart.delta",
    unit: "mV",
    digits: 0,
    lines: [["cell_delta_mv", "max", "chart.delta_max", "#8e24aa"]],
  },
  {
    id: "temps",
    title: "chart.temps",
    unit: "°C",
    digits: 0,
    lines: [
      ["temp_max_c", "max", "chart.highest", "#c62828"],
      ["temp_min_c", "min", "chart.lowest", "#1565c0"],
    ],
  },
];

/** Columns for uPlot, with a null inserted where buckets are missing so that gaps show as gaps. */
export function toColumns(hist, chart) {
  const ts = hist.t || [];
  const bucket = hist.bucket_s || 60;
  const xs = [];
  const ys = chart.lines.map(() => []);
  for (let i = 0; i < ts.length; i++) {
    if (i > 0 && ts[i] - ts[i - 1] > bucket * 2.5) {
      xs.push(ts[i - 1] + bucket);
      ys.forEach((col) => col.push(null));
    }
    xs.push(ts[i]);
    chart.lines.forEach(([name, agg], k) => {
      const v = hist.series?.[name]?.[agg]?.[i];
      ys[k].push(v === undefined ? null : v);
    });
  }
  return [xs, ...ys];
}

export class ChartSet {
  constructor(container) {
    this.container = container;
    this.plots = new Map();
    this.resize = new ResizeObserver(() => this.#fit());
    this.resize.observe(container);
  }

  #width(el) {
    return Math.max(200, Math.floor(el.clientWidth));
  }

  #fit() {
    for (const { plot, el } of this.plots.values()) {
      const w = this.#width(el);
      if (Math.abs(plot.width - w) > 2) plot.setSize({ width: w, height: plot.height });
    }
  }

  /** ``span`` = [fromMs, toMs]: the x axis always shows the whole chosen range, data or not. */
  update(hist, span) {
    this.xRange = span ? [span[0] / 1000, span[1] / 1000] : null;
    const hasData = (hist.t || []).length > 0;
    if (!window.uPlot) {
      this.container.replaceChildren(h("p.muted", t("chart.unavailable")));
      return;
    }
    if (!hasData) {
      this.destroy();
      this.container.replaceChildren(h("p.muted.no-history", t("chart.no_history")));
      return;
    }
    if (!this.plots.size) this.container.replaceChildren();
    for (const chart of CHARTS) {
      const cols = toColumns(hist, chart);
      let entry = this.plots.get(chart.id);
      if (!entry) {
        const el = h("div.chart-plot");
        const box = h(`figure.chart#chart-${chart.id}`, h("figcaption", `${t(chart.title)} (${chart.unit})`), el);
        this.container.append(box);
        const plot = new window.uPlot(this.#opts(chart, this.#width(el)), cols, el);
        entry = { plot, el };
        this.plots.set(chart.id, entry);
      } else {
        entry.plot.setData(cols);
      }
    }
  }

  #opts(chart, width) {
    const fmtv = (u, v) => (v === null || v === undefined ? "–" : `${num(v, chart.digits)} ${chart.unit}`);
    return {
      width,
      height: 170,
      fmtDate: chartDate,
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (u, lo, hi) => this.xRange || [lo, hi] },
        y: chart.range
          ? { range: chart.range }
          : {
              range: (u, lo, hi) => {
                if (lo === null || hi === null) return [0, 1];
                if (chart.zero) {
                  lo = Math.min(lo, 0);
                  hi = Math.max(hi, 0);
                }
                const pad = Math.max((hi - lo) * 0.1, chart.unit === "mV" ? 5 : 0.5);
                return [lo - pad, hi + pad];
              },
            },
      },
      axes: [
        { stroke: "#5b6670", grid: { stroke: "#e6e9ec" }, ticks: { stroke: "#e6e9ec" } },
        { stroke: "#5b6670", size: 56, grid: { stroke: "#e6e9ec" }, ticks: { stroke: "#e6e9ec" } },
      ],
      series: [
        { label: t("chart.time") },
        ...chart.lines.map(([, , label, color]) => ({ label: t(label), stroke: color, width: 1.6, value: fmtv, spanGaps: false })),
      ],
    };
  }

  destroy() {
    for (const { plot } of this.plots.values()) plot.destroy();
    this.plots.clear();
  }

  dispose() {
    this.resize.disconnect();
    this.destroy();
  }
}
