/**
 * Which idempotency keys `(room, user, send id)` a node's room file may hold: a Bloom filter, so that the dedupe
 * lookup of a send (DESIGN.md invariant 4) asks SQLite only when the key may have been written. Almost every
 * send is new, and that lookup was the largest own item of the owner's event loop under load while commits ran
 * on a writer thread (until session 16: each of its commits emptied the reading connection's page cache, so each
 * lookup re-read its index pages, ~45 µs in the fan-out benchmark); with a warm cache it still costs ~8 µs.
 *
 * `mayHold` is false only for a key never added (no false negatives); a false positive costs the SQLite lookup
 * the filter would have saved. Keys of deleted rooms stay in (more false positives, never a wrong answer)
 * until it is replaced by one read afresh from the file (send-keys.ts). The filter
 * grows by layers, each with twice the keys of the one before, so that growing needs no rescan.
 */

/** Bits per key and probes per key: about 0.3 % false positives per full layer. */
const BITS_PER_KEY = 12;
const PROBES = 8;
/** Keys of the first layer (96 KiB); a node with a million messages has five layers. */
const FIRST_LAYER_KEYS = 1 << 16;

class Layer {
  private readonly bits: Uint32Array;
  private readonly mask: number;
  count = 0;

  constructor(readonly capacity: number) {
    const bits = nextPowerOfTwo(capacity * BITS_PER_KEY);
    this.bits = new Uint32Array(bits / 32);
    this.mask = bits - 1;
  }

  add(h1: number, h2: number): void {
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.count++;
  }

  has(h1: number, h2: number): boolean {
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

export class SendFilter {
  private readonly layers: Layer[] = [new Layer(FIRST_LAYER_KEYS)];
  // The two hashes of the last key hashed (the probes are h1 + i * h2, Kirsch-Mitzenmacher).
  private h1 = 0;
  private h2 = 0;

  /** Keys added (a key added twice counts twice). */
  get size(): number {
    return this.layers.reduce((n, l) => n + l.count, 0);
  }

  add(room: string, user: string, id: string): void {
    let last = this.layers[this.layers.length - 1]!;
    if (last.count >= last.capacity) this.layers.push((last = new Layer(last.capacity * 2)));
    this.hash(room, user, id);
    last.add(this.h1, this.h2);
  }

  /** False: no send with this key was ever added. True: maybe (ask the store). */
  mayHold(room: string, user: string, id: string): boolean {
    this.hash(room, user, id);
    for (const layer of this.layers) if (layer.has(this.h1, this.h2)) return true;
    return false;
  }

  /** Two independent 32-bit hashes of the key (FNV-1a from two offsets, each finished with murmur3's mix). */
  private hash(room: string, user: string, id: string): void {
    this.h1 = 0x811c9dc5;
    this.h2 = 0x2f8e7c1d;
    this.feed(room);
    this.feed(user);
    this.feed(id);
    this.h1 = mix(this.h1);
    // Odd, so the probes of a key never collapse onto one bit.
    this.h2 = mix(this.h2) | 1;
  }

  private feed(s: string): void {
    let a = this.h1;
    let b = this.h2;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x01000193);
    }
    // A separator, so that ("ab", "c") and ("a", "bc") differ.
    this.h1 = Math.imul(a ^ 0x10000, 0x01000193);
    this.h2 = Math.imul(b ^ 0x10000, 0x01000193);
  }
}

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

function nextPowerOfTwo(n: number): number {
  let p = 32;
  while (p < n) p *= 2;
  return p;
}
