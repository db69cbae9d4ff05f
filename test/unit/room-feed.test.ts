import { expect } from "chai";
import { pino } from "pino";
import { RoomFeed, type FeedSink, type FeedSource } from "../../node/room-feed.js";
import type { RoomEvent, StoredMessage } from "../../shards/index.js";

const log = pino({ level: "silent" });

function msg(seq: number): StoredMessage {
  return { room: "r", seq, id: `i${seq}`, user: "u", text: `t${seq}`, ts: seq };
}

/** A scripted owner: the test pushes events by hand; history answers from `stored`. */
class ScriptedOwner implements FeedSource {
  listener: ((e: RoomEvent) => void) | undefined;
  stored: StoredMessage[] = [];
  historyCalls = 0;
  failHistory = 0;
  follow(_room: string, listener: (e: RoomEvent) => void) {
    this.listener = listener;
  }
  unfollow() {
    this.listener = undefined;
  }
  async history(_room: string, q: { after: number; limit: number }) {
    this.historyCalls++;
    if (this.failHistory > 0) {
      this.failHistory--;
      throw new Error("owner unreachable");
    }
    return this.stored.filter((m) => m.seq > q.after).slice(0, q.limit);
  }
  head(seq: number) {
    this.listener?.({ room: "r", type: "head", seq });
  }
  commit(seq: number, deliver = true) {
    const m = msg(seq);
    this.stored.push(m);
    if (deliver) this.listener?.({ room: "r", type: "message", message: m });
  }
}

class RecordingSink implements FeedSink {
  seqs: number[] = [];
  resubscribes = 0;
  message(_room: string, m: StoredMessage) {
    this.seqs.push(m.seq);
  }
  presence() {}
  typing() {}
  resets: number[] = [];
  resubscribed() {
    this.resubscribes++;
  }
  reset(_room: string, seq: number) {
    this.resets.push(seq);
  }
  gaps: [number, number][] = [];
  gap(_room: string, after: number, next: number) {
    this.gaps.push([after, next]);
  }
}

const settle = () => new Promise((r) => setTimeout(r, 20));

describe("room feed (gateway fan-out)", () => {
  it("becomes ready at the owner's head and delivers in line", async () => {
    const owner = new ScriptedOwner();
    const sink = new RecordingSink();
    const feed = new RoomFeed("r", owner, sink, log);
    expect(feed.ready).to.equal(false);
    owner.stored = [msg(1), msg(2)];
    owner.head(2);
    await feed.whenReady(100);
    owner.commit(3);
    owner.commit(4);
    expect(sink.seqs).to.deep.equal([3, 4]);
    expect(owner.historyCalls).to.equal(0);
  });

  it("drops duplicates and fills a hole from history before going on", async () => {
    const owner = new ScriptedOwner();
    const sink = new RecordingSink();
    new RoomFeed("r", owner, sink, log);
    owner.head(0);
    owner.commit(1);
    owner.listener?.({ room: "r", type: "message", message: msg(1) }); // a duplicate
    owner.commit(2, false);
    owner.commit(3, false);
    owner.commit(4); // 2 and 3 never arrived as events
    owner.commit(5);
    await settle();
    expect(sink.seqs).to.deep.equal([1, 2, 3, 4, 5]);
  });

  it("catches up after the owner path broke and came back with a newer head", async () => {
    const owner = new ScriptedOwner();
    const sink = new RecordingSink();
    new RoomFeed("r", owner, sink, log);
    owner.head(0);
    owner.commit(1);
    owner.commit(2, false);
    owner.commit(3, false);
    owner.failHistory = 2;
    owner.head(3); // re-subscribed: the owner says 3 exists
    await new Promise((r) => setTimeout(r, 700));
    expect(sink.seqs).to.deep.equal([1, 2, 3]);
    expect(sink.resubscribes).to.equal(1);
  });

  it("admits a catching-up socket exactly at its seq, before later messages", async () => {
    const owner = new ScriptedOwner();
    const sink = new RecordingSink();
    const feed = new RoomFeed("r", owner, sink, log);
    owner.head(0);
    const admittedAt: number[] = [];
    expect(feed.whenAt(0, () => admittedAt.push(sink.seqs.length))).to.equal(true);
    expect(feed.whenAt(2, () => admittedAt.push(feed.position))).to.equal(true);
    owner.commit(1);
    owner.commit(2);
    owner.commit(3);
    expect(admittedAt).to.deep.equal([0, 2]);
    expect(feed.whenAt(1, () => {})).to.equal(false);
  });

  it("follows an owner whose head went back (rebuilt from an older checkpoint)", async () => {
    const owner = new ScriptedOwner();
    const sink = new RecordingSink();
    const feed = new RoomFeed("r", owner, sink, log);
    owner.head(0);
    owner.commit(1);
    owner.commit(2);
    let admitted = false;
    feed.whenAt(5, () => (admitted = true));
    owner.stored = [msg(1)];
    owner.head(1);
    expect(feed.position).to.equal(1);
    expect(admitted).to.equal(true);
    expect(sink.resets).to.deep.equal([1]);
    owner.commit(2);
    expect(sink.seqs).to.deep.equal([1, 2, 2]);
  });

  it("jumps over seqs the owner skipped (after a failover) and says so", async () => {
    const owner = new ScriptedOwner();
    const sink = new RecordingSink();
    const feed = new RoomFeed("r", owner, sink, log);
    owner.head(0);
    owner.commit(1);
    owner.commit(2);
    let admitted = false;
    feed.whenAt(500, () => (admitted = true));
    // The new owner starts after its predecessor's backlog: the next seq is 1002.
    owner.stored.push(msg(1002));
    owner.listener?.({ room: "r", type: "message", message: msg(1002) });
    await settle();
    expect(sink.seqs).to.deep.equal([1, 2, 1002]);
    expect(sink.gaps).to.deep.equal([[2, 1002]]);
    expect(admitted).to.equal(true);
  });

  it("times out readiness when the owner never answers", async () => {
    const feed = new RoomFeed("r", new ScriptedOwner(), new RecordingSink(), log);
    let failed = false;
    await feed.whenReady(30).catch(() => (failed = true));
    expect(failed).to.equal(true);
  });
});
