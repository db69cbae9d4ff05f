/**
 * Mergeable latency histogram: 0.05 ms buckets below 50 ms, 0.5 ms buckets up to 1 s, 10 ms buckets up to
 * 120 s, one overflow bucket. Quantiles are reported as the bucket's upper edge (capped at the exact max).
 */
import type { HistData } from "./protocol.js";

const FINE_END = 50;
const FINE_W = 0.05;
const MID_END = 1000;
const MID_W = 0.5;
const COARSE_END = 120_000;
const COARSE_W = 10;
const N_FINE = Math.round(FINE_END / FINE_W);
const N_MID = Math.round((MID_END - FINE_END) / MID_W);
const N_COARSE = Math.round((COARSE_END - MID_END) / COARSE_W);
const N_BUCKETS = N_FINE + N_MID + N_COARSE + 1;

function bucketOf(ms: number): number {
  if (!(ms > 0)) return 0;
  if (ms < FINE_END) return Math.floor(ms / FINE_W);
  if (ms < MID_END) return N_FINE + Math.floor((ms - FINE_END) / MID_W);
  if (ms < COARSE_END) return N_FINE + N_MID + Math.floor((ms - MID_END) / COARSE_W);
  return N_BUCKETS - 1;
}

function upperEdge(b: number): number {
  if (b < N_FINE) return (b + 1) * FINE_W;
  if (b < N_FINE + N_MID) return FINE_END + (b - N_FINE + 1) * MID_W;
  if (b < N_BUCKETS - 1) return MID_END + (b - N_FINE - N_MID + 1) * COARSE_W;
  return Infinity;
}

export class Histogram {
  private counts = new Uint32Array(N_BUCKETS);
  n = 0;
  sum = 0;
  max = 0;

  add(ms: number): void {
    const b = bucketOf(ms);
    this.counts[b] = (this.counts[b] ?? 0) + 1;
    this.n++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }

  merge(d: HistData): void {
    for (const [b, c] of d.buckets) this.counts[b] = (this.counts[b] ?? 0) + c;
    this.n += d.n;
    this.sum += d.sum;
    if (d.max > this.max) this.max = d.max;
  }

  data(): HistData {
    const buckets: [number, number][] = [];
    for (let i = 0; i < N_BUCKETS; i++) {
      const c = this.counts[i] ?? 0;
      if (c > 0) buckets.push([i, c]);
    }
    return { n: this.n, sum: this.sum, max: this.max, buckets };
  }

  quantile(q: number): number | null {
    if (this.n === 0) return null;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let acc = 0;
    for (let i = 0; i < N_BUCKETS; i++) {
      acc += this.counts[i] ?? 0;
      if (acc >= rank) return Math.min(upperEdge(i), this.max);
    }
    return this.max;
  }

  stats(): { n: number; p50: number | null; p90: number | null; p99: number | null; max: number | null; mean: number | null } {
    return {
      n: this.n,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.n > 0 ? this.max : null,
      mean: this.n > 0 ? this.sum / this.n : null,
    };
  }
}
