/**
 * The web chat page (node/web/) in headless Chromium against a real 3-node cluster.
 *
 * alice opens the page served by node 1, bob the page served by node 2; both join a room owned by node 3, so
 * every operation is forwarded over gRPC. They see each other in the member list, see each other typing,
 * exchange messages both ways and must both show the same messages in seq order, matching the room's history
 * over HTTP. Then bob's node restarts while alice keeps talking: bob's page reconnects on its own and resumes
 * with `since`, showing every missed message exactly once. Finally a reload keeps bob's session and rooms.
 *
 * Screenshots go to test-output/: web-chat.png (alice, desktop), web-chat-mobile.png (bob, narrow),
 * web-chat-resumed.png (bob after the restart).
 * Skipped only when /usr/bin/chromium is missing.
 */
import { expect } from "chai";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { REPO_ROOT, fullHistory, ownerOf, roomOwnedBy, session, startCluster, type TestCluster } from "../helpers/cluster.js";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
const OUT_DIR = path.join(REPO_ROOT, "test-output");
const WAIT = 15_000;

interface ShownMessage {
  seq: number;
  user: string;
  text: string;
}

/** A browser page with the errors it raised. */
interface ChatPage {
  page: Page;
  context: BrowserContext;
  errors: string[];
}

/** The messages the page shows for the current room, in DOM order. */
function shownMessages(page: Page): Promise<ShownMessage[]> {
  return page.locator('[data-testid="messages"] [data-testid="message"]').evaluateAll((els) =>
    els.map((el) => {
      const e = el as HTMLElement;
      return {
        seq: Number(e.dataset.seq),
        user: e.dataset.user ?? "",
        text: e.querySelector('[data-testid="message-text"]')?.textContent ?? "",
      };
    }),
  );
}

/** Polls the page until `pred` holds for its shown messages; returns them. */
async function waitForMessages(page: Page, what: string, pred: (m: ShownMessage[]) => boolean): Promise<ShownMessage[]> {
  const deadline = Date.now() + WAIT;
  let last: ShownMessage[] = [];
  while (Date.now() < deadline) {
    last = await shownMessages(page);
    if (pred(last)) return last;
    await page.waitForTimeout(100);
  }
  throw new Error(`timed out waiting for ${what}; the page shows ${JSON.stringify(last)}`);
}

async function connState(page: Page): Promise<string | null> {
  return page.getByTestId("conn-status").getAttribute("data-state");
}

describe("browser: web chat page", function () {
  this.timeout(60_000);

  let cluster: TestCluster | undefined;
  let browser: Browser | undefined;
  let alice: ChatPage;
  let bob: ChatPage;
  let room = "";
  const aliceText = "hello bob <b>not bold</b> & <img src=x onerror=\"window.__xss=1\">";
  const bobText = "hi alice\nsecond line";

  const c = (): TestCluster => {
    if (cluster === undefined) throw new Error("cluster not started");
    return cluster;
  };

  async function openAs(name: string, nodeIndex: number): Promise<ChatPage> {
    if (browser === undefined) throw new Error("browser not started");
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
    // The page warns when it had to fetch messages the server should have delivered (a hole in seq order).
    page.on("console", (msg) => {
      if (msg.type() === "warning" && msg.text().startsWith("fractal:")) errors.push(`${name}: ${msg.text()}`);
    });
    page.on("dialog", (d) => {
      errors.push(`unexpected dialog: ${d.message()}`);
      void d.dismiss();
    });
    await page.goto(`${c().node(nodeIndex).httpUrl}/`);
    await page.getByTestId("login-name").fill(name);
    await page.getByTestId("login-submit").click();
    await page.locator('[data-testid="conn-status"][data-state="connected"]').waitFor({ timeout: WAIT });
    return { page, context, errors };
  }

  async function joinRoom(p: Page, id: string): Promise<void> {
    await p.getByTestId("room-input").fill(id);
    await p.getByTestId("room-join").click();
    await p.locator(`[data-testid="room-list"] [data-testid="room-item"][data-room="${id}"]`).waitFor({ timeout: WAIT });
    await p.locator("#room-name", { hasText: `#${id}` }).waitFor({ timeout: WAIT });
  }

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      console.log(`      (skipped: ${CHROMIUM} not found; install Debian's chromium package to run the browser test)`);
      this.skip();
    }
    this.timeout(90_000);
    cluster = await startCluster({ nodes: 3 });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    await mkdir(OUT_DIR, { recursive: true });
    // A room owned by the third node: both pages' nodes forward to it.
    room = await roomOwnedBy(cluster, "n3", "web");
  });

  afterEach(function () {
    if (this.currentTest?.state === "failed") cluster?.printLogTails(30);
  });

  after(async function () {
    this.timeout(30_000);
    await browser?.close().catch(() => undefined);
    await cluster?.stopAll();
  });

  it("two users on different nodes chat through the page: presence, typing, messages in order", async function () {
    alice = await openAs("alice", 0);
    bob = await openAs("bob", 1);

    // Node indicator: each page names the node it is connected to.
    await alice.page.getByTestId("node-self").filter({ hasText: "node n1" }).waitFor({ timeout: WAIT });
    await bob.page.getByTestId("node-self").filter({ hasText: "node n2" }).waitFor({ timeout: WAIT });

    await joinRoom(alice.page, room);
    await joinRoom(bob.page, room);

    // Owner indicator, checked against the HTTP API.
    const owner = await ownerOf(c(), room);
    expect(owner).to.equal("n3");
    for (const p of [alice.page, bob.page]) {
      await p.getByTestId("room-owner").filter({ hasText: `owned by ${owner}` }).waitFor({ timeout: WAIT });
    }

    // Presence: bob comes from his join ack, alice learns about bob from a presence event.
    for (const p of [alice.page, bob.page]) {
      for (const u of ["alice", "bob"]) {
        await p.locator(`[data-testid="members"] [data-testid="member"][data-user="${u}"]`).waitFor({ timeout: WAIT });
      }
    }

    // Typing: bob types, alice sees it; nobody sees themselves typing.
    await bob.page.getByTestId("message-input").pressSequentially("hi alice", { delay: 15 });
    await alice.page.getByTestId("typing").filter({ hasText: "bob is typing" }).waitFor({ timeout: WAIT });
    expect(await bob.page.getByTestId("typing").textContent()).to.equal("");
    await bob.page.getByTestId("message-input").fill("");

    // alice → bob (Enter sends).
    await alice.page.getByTestId("message-input").fill(aliceText);
    await alice.page.getByTestId("message-input").press("Enter");
    await waitForMessages(alice.page, "alice's own message with its seq", (m) => m.some((x) => x.text === aliceText));
    await waitForMessages(bob.page, "alice's message on bob's page", (m) => m.some((x) => x.text === aliceText));

    // bob → alice (Shift+Enter is a newline, the button sends).
    await bob.page.getByTestId("message-input").fill("hi alice");
    await bob.page.getByTestId("message-input").press("Shift+Enter");
    await bob.page.getByTestId("message-input").pressSequentially("second line");
    expect(await bob.page.getByTestId("message-input").inputValue()).to.equal(bobText);
    await bob.page.getByTestId("message-send").click();

    const both = (m: ShownMessage[]) => m.length === 2 && m.some((x) => x.text === bobText);
    const seenByAlice = await waitForMessages(alice.page, "both messages on alice's page", both);
    const seenByBob = await waitForMessages(bob.page, "both messages on bob's page", both);

    expect(seenByAlice).to.deep.equal(seenByBob);
    expect(seenByAlice.map((m) => [m.user, m.text])).to.deep.equal([
      ["alice", aliceText],
      ["bob", bobText],
    ]);
    const [first, second] = seenByAlice;
    expect(first!.seq).to.be.a("number").and.to.be.greaterThan(0);
    expect(second!.seq).to.equal(first!.seq + 1);

    // Nothing left pending; the page escaped the text (no <b>/<img> elements, no script ran).
    for (const p of [alice, bob]) {
      expect(await p.page.getByTestId("message-pending").count()).to.equal(0);
      expect(await p.page.locator('[data-testid="messages"] b, [data-testid="messages"] img').count()).to.equal(0);
      expect(await p.page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).to.equal(undefined);
    }

    // The page shows what the room really holds.
    const token = await session(c().node(2).httpUrl, "checker");
    const history = await fullHistory(c().node(2).httpUrl, token, room);
    expect(history.map((m) => ({ seq: m.seq, user: m.user, text: m.text }))).to.deep.equal(seenByAlice);

    expect(await connState(alice.page)).to.equal("connected");
    expect(await connState(bob.page)).to.equal("connected");

    // Typing the other way (sending reset alice's typing throttle), then screenshots with bob typing.
    await alice.page.getByTestId("message-input").pressSequentially("and you?", { delay: 10 });
    await bob.page.getByTestId("typing").filter({ hasText: "alice is typing" }).waitFor({ timeout: WAIT });
    await alice.page.getByTestId("message-input").fill("");
    await bob.page.getByTestId("message-input").pressSequentially("fine, thanks", { delay: 10 });
    await alice.page.getByTestId("typing").filter({ hasText: "bob is typing" }).waitFor({ timeout: WAIT });
    await alice.page.screenshot({ path: path.join(OUT_DIR, "web-chat.png") });
    await bob.page.setViewportSize({ width: 390, height: 780 });
    await bob.page.waitForTimeout(400); // let the room drawer's slide transition finish
    await bob.page.screenshot({ path: path.join(OUT_DIR, "web-chat-mobile.png") });
    await bob.page.setViewportSize({ width: 1280, height: 800 });
    await bob.page.getByTestId("message-input").fill("");

    expect(alice.errors.concat(bob.errors)).to.deep.equal([]);
  });

  it("resumes without gaps or duplicates after the page's node restarts", async function () {
    if (alice === undefined || bob === undefined) this.skip();
    const before = await shownMessages(bob.page);

    await c().stop(1); // bob's node
    await bob.page.locator('[data-testid="conn-status"][data-state="reconnecting"]').waitFor({ timeout: WAIT });

    const missed = ["sent while bob's node was down 1", "sent while bob's node was down 2"];
    for (const text of missed) {
      await alice.page.getByTestId("message-input").fill(text);
      await alice.page.getByTestId("message-input").press("Enter");
      await waitForMessages(alice.page, `"${text}" acknowledged`, (m) => m.some((x) => x.text === text));
    }

    await c().restart(1);
    await bob.page.locator('[data-testid="conn-status"][data-state="connected"]').waitFor({ timeout: 30_000 });
    const expected = await waitForMessages(alice.page, "alice's view", (m) => m.length === before.length + 2);
    const resumed = await waitForMessages(bob.page, "the missed messages on bob's page", (m) => m.length >= expected.length);
    await bob.page.waitForTimeout(500); // anything duplicated would show up by now
    expect(await shownMessages(bob.page)).to.deep.equal(expected);
    expect(resumed.map((m) => m.seq)).to.deep.equal(expected.map((m) => m.seq));
    for (let i = 1; i < resumed.length; i++) expect(resumed[i]!.seq).to.equal(resumed[i - 1]!.seq + 1);

    // bob is back in the room: he can send, and alice sees him as a member.
    await bob.page.getByTestId("message-input").fill("back again");
    await bob.page.getByTestId("message-input").press("Enter");
    await waitForMessages(alice.page, "bob's message after the restart", (m) => m.some((x) => x.text === "back again"));
    await alice.page.locator('[data-testid="members"] [data-testid="member"][data-user="bob"]').waitFor({ timeout: WAIT });
    await bob.page.getByTestId("node-self").filter({ hasText: "node n2" }).waitFor({ timeout: WAIT });
    await bob.page.screenshot({ path: path.join(OUT_DIR, "web-chat-resumed.png") });

    expect(alice.errors.concat(bob.errors)).to.deep.equal([]);
  });

  it("keeps the session and the room list across a reload", async function () {
    if (bob === undefined) this.skip();
    const expected = await shownMessages(alice.page);
    await bob.page.reload();
    await bob.page.locator('[data-testid="conn-status"][data-state="connected"]').waitFor({ timeout: WAIT });
    await bob.page.locator(`[data-testid="room-item"][data-room="${room}"]`).waitFor({ timeout: WAIT });
    // No local state after a reload: the page joins and loads the latest page of history.
    const shown = await waitForMessages(bob.page, "history after the reload", (m) => m.length === expected.length);
    expect(shown).to.deep.equal(expected);
    expect(await bob.page.getByTestId("login-name").isVisible()).to.equal(false);
    expect(bob.errors).to.deep.equal([]);
  });
});
