/**
 * The idempotency keys `(room, user, send id)` a node's room file holds, as far as the dedupe lookup of a send
 * needs to know (DESIGN.md invariant 4): "certainly not there" from memory, "maybe" from a Bloom filter (see
 * send-filter.ts), so that SQLite is asked only for a possible retry.
 *
 * Complete by construction:
 * - the keys the file held when it was opened are read in a page per event-loop turn (a million rows take about
 *   a second; until then every lookup asks SQLite);
 * - every write adds its keys as it commits them, and the keys of bulk writes on their way to the bulk thread
 *   (restores) are remembered until they land;
 * - keys of deleted rooms stay in the filter (false positives only), so once about half of them are dead a
 *   fresh filter is read from the file while the current one keeps answering. It starts with the keys still
 *   on their way (its reading may pass their place in the file before they land), and writes go to both.
 */
import { SendFilter } from "./send-filter.js";

export interface SendKey {
  readonly room: string;
  readonly user: string;
  readonly id: string;
}

/** Keys of the file after `after` in (room, user, id) order, at most `limit`; throws if the file cannot be read. */
export type SendKeyPage = (after: readonly [string, string, string], limit: number) => [string, string, string][];

/** Rows per turn while the file's keys are read (about 2 ms). */
const PAGE = 2000;
/** Below this many keys the filter is not read afresh to shed deleted rooms (its first layer holds 65,536). */
const RELOAD_MIN_KEYS = 65_536;

export class SendKeys {
  private filter = new SendFilter();
  private loaded = false;
  private reloading: SendFilter | undefined;
  /** Bulk writes handed to the bulk thread and not yet answered. */
  private readonly unlanded = new Set<readonly SendKey[]>();
  /** Rows deleted since the filter was (re)read, about. */
  private removedRows = 0;

  /** Starts reading the file's keys; `open` says whether the file can still be read. */
  constructor(
    private readonly page: SendKeyPage,
    private readonly open: () => boolean,
  ) {
    this.read(this.filter, () => (this.loaded = true));
  }

  /** False: no send with this key is in the file or on its way there. True: maybe (ask the file). */
  mayHold(room: string, user: string, id: string): boolean {
    return !this.loaded || this.filter.mayHold(room, user, id);
  }

  /** True once every key of the file is in the filter. */
  get complete(): boolean {
    return this.loaded;
  }

  /** Keys in the filter, deleted rows' included. */
  get size(): number {
    return this.filter.size;
  }

  /** Keys about to be written synchronously (before the write, so no lookup can miss them). */
  added(keys: readonly SendKey[]): void {
    for (const k of keys) this.filter.add(k.room, k.user, k.id);
    if (this.reloading !== undefined) for (const k of keys) this.reloading.add(k.room, k.user, k.id);
  }

  /** Keys of a write through the bulk thread: added now, remembered until `write` has landed or failed. */
  writing(keys: readonly SendKey[], write: Promise<void>): Promise<void> {
    this.added(keys);
    this.unlanded.add(keys);
    const landed = () => void this.unlanded.delete(keys);
    write.then(landed, landed);
    return write;
  }

  /** About `rows` rows were deleted (a room moved away): reads a fresh filter once half of the keys are dead. */
  removed(rows: number): void {
    this.removedRows += rows;
    if (!this.loaded || this.reloading !== undefined) return;
    if (this.filter.size < RELOAD_MIN_KEYS || this.removedRows * 2 < this.filter.size) return;
    const fresh = new SendFilter();
    for (const keys of this.unlanded) for (const k of keys) fresh.add(k.room, k.user, k.id);
    this.reloading = fresh;
    const dead = this.removedRows;
    this.removedRows = 0;
    this.read(
      fresh,
      () => {
        this.filter = fresh;
        this.reloading = undefined;
      },
      () => {
        // The next deletion tries again.
        this.reloading = undefined;
        this.removedRows += dead;
      },
    );
  }

  /** Reads the file's keys into `into`, a page per turn, then calls `done` (or `failed` if a page cannot be read). */
  private read(into: SendFilter, done: () => void, failed: () => void = () => {}): void {
    const step = (after: readonly [string, string, string]) => {
      if (!this.open()) return;
      let rows: [string, string, string][];
      try {
        rows = this.page(after, PAGE);
      } catch {
        return failed(); // incomplete: lookups keep asking SQLite (or the current filter)
      }
      for (const [room, user, id] of rows) into.add(room, user, id);
      if (rows.length < PAGE) done();
      else setImmediate(step, rows[rows.length - 1]!);
    };
    // The first page now: a new or small file is complete before the first send.
    step(["", "", ""]);
  }
}
