/**
 * A hand-written SVG chart of one benchmark run: per scenario a bar of requests/s (left panel)
 * and a bar of p99 latency (right panel), with the numbers written at the bars. No chart library.
 */

export interface ChartRow {
  readonly name: string;
  readonly perSec: number;
  readonly p99Ms: number;
  /** "checks/s" for pdp-direct: drawn in another colour and labelled with its unit. */
  readonly unit: "req/s" | "checks/s";
}

const ROW_H = 26;
const BAR_H = 16;
const LABEL_W = 195;
const PANEL_W = 330;
const GAP = 40;
const TOP = 64;
const BOTTOM = 34;
const COLORS = { req: "#3b6fb6", checks: "#8a8f98", p99: "#d9822b" } as const;

export function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function formatRate(n: number): string {
  return n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : Math.round(n).toLocaleString("en-US");
}

function formatMs(n: number): string {
  return n >= 10 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toFixed(2);
}

/** Renders the chart; `title` and `subtitle` go on top (machine, Node, settings). */
export function renderChart(rows: readonly ChartRow[], title: string, subtitle: string): string {
  const width = LABEL_W + PANEL_W + GAP + PANEL_W + 20;
  const height = TOP + rows.length * ROW_H + BOTTOM;
  const maxRate = Math.max(1, ...rows.map((r) => r.perSec));
  const maxP99 = Math.max(0.001, ...rows.map((r) => r.p99Ms));
  const x0 = LABEL_W;
  const x1 = LABEL_W + PANEL_W + GAP;
  const numberRoom = 62; // keep the label of the longest bar inside the panel
  const rateScale = (PANEL_W - numberRoom) / maxRate;
  const p99Scale = (PANEL_W - numberRoom) / maxP99;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  out.push(`<text x="10" y="20" font-size="15" font-weight="600" fill="#222">${escape(title)}</text>`);
  out.push(`<text x="10" y="38" fill="#555">${escape(subtitle)}</text>`);
  out.push(`<text x="${x0}" y="${TOP - 8}" font-weight="600" fill="#222">throughput (requests/s; pdp-direct: checks/s)</text>`);
  out.push(`<text x="${x1}" y="${TOP - 8}" font-weight="600" fill="#222">p99 latency (ms)</text>`);
  out.push(`<line x1="${x0}" y1="${TOP - 2}" x2="${x0}" y2="${TOP + rows.length * ROW_H}" stroke="#999"/>`);
  out.push(`<line x1="${x1}" y1="${TOP - 2}" x2="${x1}" y2="${TOP + rows.length * ROW_H}" stroke="#999"/>`);

  rows.forEach((row, i) => {
    const y = TOP + i * ROW_H + (ROW_H - BAR_H) / 2;
    const mid = y + BAR_H / 2 + 4;
    const rateW = Math.max(1, row.perSec * rateScale);
    const p99W = Math.max(1, row.p99Ms * p99Scale);
    const color = row.unit === "checks/s" ? COLORS.checks : COLORS.req;
    out.push(`<text x="${x0 - 8}" y="${mid}" text-anchor="end" fill="#222">${escape(row.name)}</text>`);
    out.push(`<rect x="${x0}" y="${y}" width="${rateW.toFixed(1)}" height="${BAR_H}" fill="${color}"><title>${escape(`${row.name}: ${Math.round(row.perSec)} ${row.unit}`)}</title></rect>`);
    out.push(`<text x="${(x0 + rateW + 4).toFixed(1)}" y="${mid}" fill="#222">${escape(formatRate(row.perSec) + (row.unit === "checks/s" ? " chk/s" : ""))}</text>`);
    out.push(`<rect x="${x1}" y="${y}" width="${p99W.toFixed(1)}" height="${BAR_H}" fill="${COLORS.p99}"><title>${escape(`${row.name}: p99 ${row.p99Ms.toFixed(3)} ms`)}</title></rect>`);
    out.push(`<text x="${(x1 + p99W + 4).toFixed(1)}" y="${mid}" fill="#222">${escape(formatMs(row.p99Ms))}</text>`);
  });

  const foot = TOP + rows.length * ROW_H + 22;
  out.push(
    `<text x="10" y="${foot}" fill="#777" font-size="11">Each row: a fresh server process, a real Cerbos PDP, autocannon in its own process; every answer checked. @rate rows: fixed offered load.</text>`,
  );
  out.push(`</svg>`);
  return `${out.join("\n")}\n`;
}
