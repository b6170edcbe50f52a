/**
 * Counters and histograms cheap enough for the request path (SPEC §8 metrics move on every
 * request, ~50k/s on one core). prom-client's own children build and hash a label object and
 * validate it on every call (~0.1–1 µs); these keep one small record per label set, bound once,
 * and count into plain numbers. Nothing is formatted until a scrape.
 *
 * Each class registers itself on a prom-client Registry as one of its own metrics would (name,
 * help, type, aggregator, get(), getForPromString(), reset()) and answers in the same shape as
 * prom-client's Counter and Histogram, so `registry.metrics()`, `getSingleMetric(name).get()`,
 * `getSingleMetricAsString(name)` and `getMetricsAsJSON()` read exactly as before. The records
 * are the only copy of the numbers: a scrape reads them, it moves nothing, so scrapes can't
 * double count.
 */
import type { Metric, Registry } from "prom-client";

type Labels = Readonly<Record<string, string>>;

interface MetricConfig {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly string[];
}

/** One label set of a FastCounter. */
export class CounterSeries {
  value = 0;
  constructor(readonly labels: Labels) {}
  inc(by = 1): void {
    this.value += by;
  }
}

/** One label set of a FastHistogram. */
export class HistogramSeries {
  /** Observations per bucket, not cumulative; the last slot is above the largest bound (+Inf only). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Labels,
    private readonly bounds: Float64Array,
  ) {
    // Float64Array, not Uint32Array: at 50k/s one bucket passes 2^32 within a day.
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    // prom-client throws on NaN/±Infinity; here a lost observation beats a failed request, and
    // a NaN would poison the sum for good.
    if (!Number.isFinite(value)) return;
    // First bound with value <= bound, as prom-client; a short scan, most latencies land early.
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value; // added in call order, as prom-client does: the same float sum
    this.count++;
  }
}

/** Label sets grow lazily (a route may appear with a config reload); keyed once per new set. */
abstract class FastMetric<S extends { readonly labels: Labels }> {
  readonly aggregator = "sum";
  name: string; // not readonly: an OpenMetrics registry renames counters in place
  readonly help: string;
  readonly labelNames: readonly string[];
  protected readonly series = new Map<string, S>();

  constructor(registry: Registry, config: MetricConfig) {
    this.name = config.name;
    this.help = config.help;
    this.labelNames = [...(config.labelNames ?? [])];
    // Not a prom-client class, but the Registry only uses what this one has.
    registry.registerMetric(this as unknown as Metric);
  }

  /** The series for these label values (in labelNames order), created at zero on first use. Bind it once, off the hot path. */
  child(...values: string[]): S {
    if (values.length !== this.labelNames.length) {
      throw new Error(`${this.name}: ${values.length} label values for labels (${this.labelNames.join(", ")})`);
    }
    const key = values.join("\u0000");
    let s = this.series.get(key);
    if (!s) {
      // Label keys in labelNames order, as prom-client's labels(...values) builds them.
      const labels: Record<string, string> = {};
      this.labelNames.forEach((name, i) => (labels[name] = values[i]!));
      s = this.create(labels);
      this.series.set(key, s); // Map order = first-use order = prom-client's series order
    }
    return s;
  }

  protected abstract create(labels: Labels): S;
}

/** A monotonic counter; count with `series.inc()` on a series from child(). */
export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = "counter";

  constructor(registry: Registry, config: MetricConfig) {
    super(registry, config);
    if (this.labelNames.length === 0) this.child(); // an unlabelled counter shows 0 from the start, as prom-client's
  }

  protected create(labels: Labels): CounterSeries {
    return new CounterSeries(labels);
  }

  /** prom-client Counter.get(): fresh value objects, so getMetricsAsJSON's default labels can't reach the records. */
  async get() {
    const values = [...this.series.values()].map((s) => ({ value: s.value, labels: s.labels }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** Registry.resetMetrics(): zero in place, so series bound by callers keep counting. */
  reset(): void {
    for (const s of this.series.values()) s.value = 0;
  }
}

/** A histogram over fixed bucket bounds; observe on a series from child(). */
export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = "histogram";
  /** As given, for the `le` label values (prom-client prints the numbers as given too). */
  private readonly upperBounds: readonly number[];
  /** The same bounds as doubles, one element kind for every histogram's observe(). */
  private readonly bounds: Float64Array;

  constructor(registry: Registry, config: MetricConfig & { readonly buckets: readonly number[] }) {
    super(registry, config);
    if (this.labelNames.includes("le")) throw new Error("le is a reserved label keyword");
    this.upperBounds = Object.freeze([...config.buckets]);
    this.bounds = Float64Array.from(config.buckets);
    if (this.labelNames.length === 0) this.child(); // as prom-client: an unlabelled histogram shows zeros from the start
  }

  protected create(labels: Labels): HistogramSeries {
    return new HistogramSeries(labels, this.bounds);
  }

  /**
   * What prom-client's Histogram.getForPromString() returns, which the Registry prefers for text:
   * the series labels ride in `sharedLabels`, `le` in `labels`; buckets cumulative, +Inf = count.
   */
  async getForPromString() {
    const bucket = `${this.name}_bucket`;
    const values: Array<{ labels: Record<string, string | number>; sharedLabels: Labels; value: number; metricName: string; exemplar: null | undefined }> = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      this.upperBounds.forEach((le, i) => {
        cumulative += s.counts[i]!;
        values.push({ labels: { le }, sharedLabels: s.labels, value: cumulative, metricName: bucket, exemplar: null });
      });
      values.push(
        { labels: { le: "+Inf" }, sharedLabels: s.labels, value: s.count, metricName: bucket, exemplar: null },
        { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum`, exemplar: undefined },
        { labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count`, exemplar: undefined },
      );
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** prom-client Histogram.get(): the same values with the series labels spread into `labels` after `le`. */
  async get() {
    const data = await this.getForPromString();
    const values = data.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } }));
    return { ...data, values };
  }

  /** Registry.resetMetrics(): zero in place, so series bound by callers keep counting. */
  reset(): void {
    for (const s of this.series.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
