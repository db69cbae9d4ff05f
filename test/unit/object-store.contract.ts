/** The ObjectStore contract (shards/object-store.ts), run against every implementation. */
import { expect } from "chai";
import { PreconditionFailedError, type ObjectStore } from "../../shards/index.js";

export function objectStoreContract(name: string, open: () => Promise<ObjectStore>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let store: ObjectStore;
    beforeEach(async () => {
      store = await open();
    });

    it("puts, gets, lists by prefix and deletes", async () => {
      await store.put("rooms/a/manifest.json", Buffer.from("A"));
      await store.put("rooms/b/manifest.json", Buffer.from("B"));
      await store.put("cluster/map.json", Buffer.from("M"));
      expect((await store.get("rooms/a/manifest.json"))?.body.toString()).to.equal("A");
      expect(await store.get("rooms/zzz")).to.equal(undefined);
      expect(await store.list("rooms/")).to.deep.equal(["rooms/a/manifest.json", "rooms/b/manifest.json"]);
      await store.delete("rooms/a/manifest.json");
      await store.delete("rooms/a/manifest.json");
      expect(await store.list("rooms/")).to.deep.equal(["rooms/b/manifest.json"]);
    });

    it("lists by any prefix: whole folders, part of a name, nested, missing, everything", async () => {
      for (const k of ["rooms/a/manifest.json", "rooms/ab/manifest.json", "segments/a/1.gz", "segments/a/2.gz", "segments/b/1.gz", "cluster/map.json"]) {
        await store.put(k, Buffer.from(k));
      }
      expect(await store.list("rooms/a")).to.deep.equal(["rooms/a/manifest.json", "rooms/ab/manifest.json"]);
      expect(await store.list("rooms/a/")).to.deep.equal(["rooms/a/manifest.json"]);
      expect(await store.list("segments/a/")).to.deep.equal(["segments/a/1.gz", "segments/a/2.gz"]);
      expect(await store.list("segments/a/2")).to.deep.equal(["segments/a/2.gz"]);
      expect(await store.list("trash/a/")).to.deep.equal([]);
      expect(await store.list("c")).to.deep.equal(["cluster/map.json"]);
      expect((await store.list("")).length).to.equal(6);
    });

    it("round-trips binary bodies byte for byte", async () => {
      const body = Buffer.alloc(300_000);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7919) % 256;
      await store.put("blob/bin", body);
      expect((await store.get("blob/bin"))?.body.equals(body)).to.equal(true);
    });

    it("creates only when absent with ifNoneMatch", async () => {
      await store.put("cas/one", Buffer.from("first"), { ifNoneMatch: "*" });
      let failed: unknown;
      await store.put("cas/one", Buffer.from("second"), { ifNoneMatch: "*" }).catch((e: unknown) => (failed = e));
      expect(failed).to.be.instanceOf(PreconditionFailedError);
      expect((await store.get("cas/one"))?.body.toString()).to.equal("first");
    });

    it("compares and swaps by version with ifMatch", async () => {
      const v1 = await store.put("cas/map", Buffer.from("epoch 1"));
      const v2 = await store.put("cas/map", Buffer.from("epoch 2"), { ifMatch: v1.version });
      expect(v2.version).to.not.equal(v1.version);
      let failed: unknown;
      await store.put("cas/map", Buffer.from("stale"), { ifMatch: v1.version }).catch((e: unknown) => (failed = e));
      expect(failed).to.be.instanceOf(PreconditionFailedError);
      await store.put("cas/absent", Buffer.from("x"), { ifMatch: v1.version }).catch((e: unknown) => (failed = e));
      expect(await store.get("cas/absent")).to.equal(undefined);
      expect((await store.get("cas/map"))?.version).to.equal(v2.version);
    });

    it("lets exactly one of many concurrent compare-and-swaps win", async () => {
      const v = await store.put("cas/race", Buffer.from("0"));
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => store.put("cas/race", Buffer.from(`writer ${i}`), { ifMatch: v.version })),
      );
      expect(results.filter((r) => r.status === "fulfilled")).to.have.length(1);
      expect(results.filter((r) => r.status === "rejected" && r.reason instanceof PreconditionFailedError)).to.have.length(7);
    });

    for (const bad of ["", "/abs", "a//b", "../x", "a/../b", "sp ace", "a/./b"]) {
      it(`refuses the key ${JSON.stringify(bad)}`, async () => {
        let failed: unknown;
        await store.put(bad, Buffer.from("x")).catch((e: unknown) => (failed = e));
        expect(failed).to.be.instanceOf(Error);
      });
    }
  });
}
