// Fractal Chat web page: plain browser JavaScript, no framework, no build step.
// Speaks client protocol v1 (see DESIGN.md) over socket.io, plus the HTTP API for session, cluster and room info.
// All user-provided text is put into the page with textContent / attributes, never innerHTML.
"use strict";

(() => {
  const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const ROOM_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
  const MAX_TEXT = 4000;
  const PAGE = 50;
  const ACK_TIMEOUT_MS = 10000;
  const TYPING_THROTTLE_MS = 2000;
  const TYPING_SHOW_MS = 3000;
  const OWNER_REFRESH_MS = 30000;
  const GROUP_WINDOW_MS = 5 * 60 * 1000;
  const RETRYABLE = new Set(["timeout", "disconnected", "unavailable", "internal", "rate_limited"]);

  const KEY_TOKEN = "fractal.token";
  const KEY_USER = "fractal.user";
  const roomsKey = (user) => `fractal.rooms.${user}`;
  const currentKey = (user) => `fractal.current.${user}`;

  // ---------------------------------------------------------------- DOM helpers
  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

  /** Create an element. `props`: className, text, dataset, attrs, on. Children are nodes or strings (as text). */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      if (props.className) node.className = props.className;
      if (props.text !== undefined) node.textContent = String(props.text);
      if (props.dataset) for (const [k, v] of Object.entries(props.dataset)) node.dataset[k] = String(v);
      if (props.attrs) for (const [k, v] of Object.entries(props.attrs)) node.setAttribute(k, String(v));
      if (props.on) for (const [k, v] of Object.entries(props.on)) node.addEventListener(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  const ui = {
    loginView: $("login-view"), loginForm: $("login-form"), loginName: /** @type {HTMLInputElement} */ ($("login-name")),
    loginSubmit: /** @type {HTMLButtonElement} */ ($("login-submit")), loginError: $("login-error"),
    chatView: $("chat-view"), me: $("me"), logout: $("logout"), nodeSelf: $("node-self"), conn: $("conn-status"),
    sidebar: $("sidebar"), scrim: $("scrim"), toggleSidebar: $("toggle-sidebar"),
    roomForm: $("room-form"), roomInput: /** @type {HTMLInputElement} */ ($("room-input")),
    roomJoin: /** @type {HTMLButtonElement} */ ($("room-join")), roomError: $("room-error"),
    roomList: $("room-list"), noRooms: $("no-rooms"),
    roomName: $("room-name"), roomOwner: $("room-owner"), toggleMembers: $("toggle-members"),
    membersCountBtn: $("members-count-btn"),
    messages: $("messages"), emptyRoom: $("empty-room"), jumpLatest: $("jump-latest"), typing: $("typing"),
    composer: $("composer"), input: /** @type {HTMLTextAreaElement} */ ($("message-input")),
    send: /** @type {HTMLButtonElement} */ ($("message-send")), charCount: $("char-count"),
    membersPanel: $("members-panel"), members: $("members"), membersCount: $("members-count"),
  };

  // ---------------------------------------------------------------- state
  const state = {
    token: sessionStorage.getItem(KEY_TOKEN),
    user: sessionStorage.getItem(KEY_USER),
    /** @type {any} */ socket: null,
    connGen: 0, // bumps on every (re)connect; acks from an older connection are ignored
    everConnected: false,
    /** @type {Map<string, Room>} */ rooms: new Map(),
    /** @type {string[]} */ order: [],
    /** @type {string|null} */ current: null,
    /** @type {Set<(v: any) => void>} */ inflight: new Set(),
    ownerTimer: 0,
    reconnectTimer: 0,
    reconnectDelay: 1000,
  };

  /**
   * @typedef {{room: string, seq: number, id: string, user: string, text: string, ts: number}} Msg
   * @typedef {{id: string, text: string, status: string, error: string, attempts: number, el: HTMLElement|null, timer: number, inflight: boolean}} Pending
   */
  class Room {
    /** @param {string} id */
    constructor(id) {
      this.id = id;
      /** @type {Map<number, Msg>} */ this.messages = new Map();
      /** @type {{key: number, el: HTMLElement, user?: string, ts?: number}[]} */ this.items = [];
      /** @type {Map<string, Pending>} */ this.pending = new Map();
      /** @type {Pending[]} */ this.sendQueue = [];
      this.sending = false;
      this.hasState = false; // joined at least once in this page: later joins use `since`
      this.anchor = 0; // seq from the first join ack: live messages start after it, older ones come from history
      this.contig = 0; // highest seq such that every seq in (anchor, contig] is present: the resume point
      this.joined = false;
      this.joining = false;
      this.joinRetry = 0;
      this.joinTimer = 0;
      this.holeTimer = 0;
      /** @type {Set<string>} */ this.members = new Set();
      /** @type {Map<string, number>} */ this.typing = new Map();
      this.unread = 0;
      this.lastTypingSent = 0;
      /** idle | loading | more | start | retention | error */
      this.history = "idle";
      this.owner = "";
      this.error = "";
      this.stick = true;
      this.scrollTop = 0;
      this.root = h("div", { className: "room-root" });
      this.top = h("div", { className: "history-top" });
      this.list = h("div", { className: "room-items" });
      this.pendingList = h("div", { className: "room-pending" });
      this.root.append(this.top, this.list, this.pendingList);
    }
    get lowestSeq() { return this.items.find((i) => Number.isInteger(i.key))?.key ?? 0; }
    get highestSeq() {
      for (let i = this.items.length - 1; i >= 0; i--) {
        const it = this.items[i];
        if (it && Number.isInteger(it.key)) return it.key;
      }
      return 0;
    }
    /** The `since` to resume from after a reconnect. */
    get resumeSeq() { return Math.max(this.contig, this.anchor); }
  }

  // ---------------------------------------------------------------- small utilities
  function uuid() {
    if (typeof crypto !== "undefined" && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context; this does not
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }
  const isObj = (v) => typeof v === "object" && v !== null;
  const errMsg = (e, fallback) => (isObj(e) && typeof e.message === "string" && e.message) || fallback;
  const errCode = (e) => (isObj(e) && typeof e.code === "string" ? e.code : "internal");

  function hue(name) {
    let x = 0;
    for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
    return x % 360;
  }
  function fmtTime(ts) {
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return "";
    const now = new Date();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (d.toDateString() === now.toDateString()) return time;
    return `${d.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
  }
  function validMsg(m) {
    return isObj(m) && typeof m.room === "string" && Number.isInteger(m.seq) && m.seq > 0 &&
      typeof m.user === "string" && typeof m.text === "string";
  }
  function loadJSON(key, fallback) {
    try { const v = JSON.parse(localStorage.getItem(key) ?? ""); return v ?? fallback; } catch { return fallback; }
  }

  // ---------------------------------------------------------------- HTTP
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      return { ok: false, status: 0, error: { code: "unavailable", message: "Cannot reach the server." } };
    }
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    if (res.ok && isObj(data)) return { ok: true, status: res.status, data };
    const error = isObj(data) && isObj(data.error)
      ? { code: errCode(data.error), message: errMsg(data.error, `HTTP ${res.status}`) }
      : { code: res.status === 401 ? "unauthorized" : "internal", message: `HTTP ${res.status} ${res.statusText}`.trim() };
    if (res.status === 401 && state.token && path !== "/api/session") sessionExpired();
    return { ok: false, status: res.status, error };
  }

  // ---------------------------------------------------------------- login / logout
  function showLogin(message) {
    ui.chatView.hidden = true;
    ui.loginView.hidden = false;
    ui.loginName.value = state.user || ui.loginName.value;
    setError(ui.loginError, message || "");
    ui.loginSubmit.disabled = false;
    ui.loginName.focus();
    document.title = "Fractal Chat";
  }
  function setError(node, message) {
    node.textContent = message;
    node.hidden = !message;
  }

  ui.loginForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = ui.loginName.value.trim();
    if (!NAME_RE.test(name)) {
      ui.loginName.setAttribute("aria-invalid", "true");
      setError(ui.loginError, "Use 1–32 characters: letters, digits, _ . -");
      return;
    }
    ui.loginName.removeAttribute("aria-invalid");
    setError(ui.loginError, "");
    ui.loginSubmit.disabled = true;
    ui.loginSubmit.textContent = "Signing in…";
    const r = await api("POST", "/api/session", { name });
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = "Sign in";
    if (!r.ok || typeof r.data.token !== "string") {
      setError(ui.loginError, r.ok ? "Unexpected answer from the server." : `${r.error.message} (${r.error.code})`);
      return;
    }
    state.token = r.data.token;
    state.user = typeof r.data.user === "string" ? r.data.user : name;
    sessionStorage.setItem(KEY_TOKEN, state.token);
    sessionStorage.setItem(KEY_USER, state.user);
    startChat();
  });
  ui.loginName.addEventListener("input", () => ui.loginName.removeAttribute("aria-invalid"));

  function teardown() {
    if (state.socket) {
      state.socket.removeAllListeners();
      state.socket.disconnect();
      state.socket = null;
    }
    failInflight();
    clearTimeout(state.reconnectTimer);
    clearInterval(state.ownerTimer);
    for (const room of state.rooms.values()) {
      clearTimeout(room.joinTimer);
      for (const t of room.typing.values()) clearTimeout(t);
      for (const p of room.pending.values()) clearTimeout(p.timer);
    }
    state.rooms.clear();
    state.order = [];
    state.current = null;
    state.everConnected = false;
  }

  function sessionExpired() {
    teardown();
    state.token = null;
    sessionStorage.removeItem(KEY_TOKEN);
    showLogin("Your session is no longer valid. Please sign in again.");
  }

  ui.logout.addEventListener("click", () => {
    teardown();
    state.token = null;
    sessionStorage.removeItem(KEY_TOKEN);
    showLogin("");
  });

  // ---------------------------------------------------------------- chat start
  function startChat() {
    teardown();
    ui.loginView.hidden = true;
    ui.chatView.hidden = false;
    ui.me.textContent = state.user;
    ui.nodeSelf.textContent = "node …";
    const saved = loadJSON(roomsKey(state.user), []);
    for (const id of Array.isArray(saved) ? saved : []) {
      if (typeof id === "string" && ROOM_RE.test(id) && !state.rooms.has(id)) addRoom(id);
    }
    const cur = localStorage.getItem(currentKey(state.user));
    state.current = cur && state.rooms.has(cur) ? cur : (state.order[0] ?? null);
    renderRoomList();
    showRoom();
    if (state.order.length === 0 && window.matchMedia("(max-width: 680px)").matches) openDrawer();
    setConn("connecting");
    connect();
    state.ownerTimer = window.setInterval(() => { if (state.current) refreshOwner(state.current); }, OWNER_REFRESH_MS);
  }

  function addRoom(id) {
    const room = new Room(id);
    state.rooms.set(id, room);
    state.order.push(id);
    return room;
  }
  function saveRooms() {
    if (!state.user) return;
    localStorage.setItem(roomsKey(state.user), JSON.stringify(state.order));
    if (state.current) localStorage.setItem(currentKey(state.user), state.current);
    else localStorage.removeItem(currentKey(state.user));
  }

  // ---------------------------------------------------------------- socket
  function setConn(s) {
    ui.conn.dataset.state = s;
    ui.conn.textContent = s;
    ui.conn.title = s === "connected" ? `Connected (${state.socket?.io?.engine?.transport?.name ?? "?"})` : s;
  }

  function connect() {
    // eslint-disable-next-line no-undef
    if (typeof io !== "function") {
      setConn("offline");
      return;
    }
    // Default transports: HTTP long-polling first, then upgrade to websocket.
    // eslint-disable-next-line no-undef
    const socket = io({ auth: (cb) => cb({ token: state.token }), reconnectionDelayMax: 5000 });
    state.socket = socket;

    socket.on("connect", () => {
      state.connGen++;
      const reconnect = state.everConnected;
      state.everConnected = true;
      state.reconnectDelay = 1000;
      setConn("connected");
      socket.io.engine?.once?.("upgrade", () => setConn("connected"));
      refreshCluster();
      // Join every room, current first. Rooms we already hold messages for resume with `since`.
      const ids = [...state.order];
      if (state.current) ids.sort((a, b) => (a === state.current ? -1 : b === state.current ? 1 : 0));
      for (const id of ids) {
        const room = state.rooms.get(id);
        if (room) joinRoom(room);
      }
      if (state.current) refreshOwner(state.current);
      if (reconnect) console.info("fractal: reconnected, resuming rooms", ids.map((id) => `${id}@${state.rooms.get(id)?.resumeSeq}`).join(" "));
    });

    socket.on("disconnect", (reason) => {
      failInflight();
      for (const room of state.rooms.values()) {
        room.joined = false;
        room.joining = false;
        clearTimeout(room.joinTimer);
        clearTyping(room);
      }
      renderRoomList();
      setConn("reconnecting");
      // The client reconnects by itself except after a server-side disconnect; do it then too.
      if (reason === "io server disconnect") scheduleReconnect();
    });

    socket.on("connect_error", (err) => {
      if (errMsg(err, "") === "unauthorized") {
        sessionExpired();
        return;
      }
      setConn(state.everConnected ? "reconnecting" : "connecting");
      if (!socket.active) scheduleReconnect(); // refused by middleware: the client won't retry on its own
    });

    socket.on("message", onMessage);
    socket.on("presence", onPresence);
    socket.on("typing", onTyping);
    socket.on("gap", onGap);
    socket.on("reset", onReset);
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    const delay = state.reconnectDelay;
    state.reconnectDelay = Math.min(delay * 2, 10000);
    state.reconnectTimer = window.setTimeout(() => { if (state.socket && !state.socket.connected) state.socket.connect(); }, delay);
  }

  /** Emit with an ack; resolves to the ack, or {ok:false, error:{code:"timeout"|"disconnected"}}. Never rejects. */
  function request(event, payload, timeoutMs = ACK_TIMEOUT_MS) {
    return new Promise((resolve) => {
      const socket = state.socket;
      if (!socket || !socket.connected) {
        resolve({ ok: false, error: { code: "disconnected", message: "Not connected." } });
        return;
      }
      let done = false;
      const finish = (v) => {
        if (done) return;
        done = true;
        state.inflight.delete(finish);
        resolve(v);
      };
      state.inflight.add(finish);
      socket.timeout(timeoutMs).emit(event, payload, (err, ack) => {
        if (err) finish({ ok: false, error: { code: "timeout", message: "The server did not answer in time." } });
        else if (!isObj(ack) || typeof ack.ok !== "boolean") finish({ ok: false, error: { code: "internal", message: "Malformed answer from the server." } });
        else if (!ack.ok) finish({ ok: false, error: { code: errCode(ack.error), message: errMsg(ack.error, "Request failed.") } });
        else finish(ack);
      });
    });
  }
  function failInflight() {
    for (const finish of [...state.inflight]) finish({ ok: false, error: { code: "disconnected", message: "Connection lost." } });
  }

  // ---------------------------------------------------------------- cluster / owner
  async function refreshCluster() {
    const r = await api("GET", "/api/cluster");
    if (!r.ok) {
      ui.nodeSelf.textContent = "node ?";
      ui.nodeSelf.title = r.error.message;
      return;
    }
    const self = String(r.data.self ?? "?");
    ui.nodeSelf.replaceChildren(h("span", { className: "wide-only", text: "connected to " }), `node ${self}`);
    const nodes = Array.isArray(r.data.nodes) ? r.data.nodes : [];
    ui.nodeSelf.title = `Connected to node ${self} · epoch ${r.data.epoch ?? "?"} · ${nodes.length} node(s): ` +
      nodes.map((n) => (isObj(n) ? `${n.id}${n.state ? ` (${n.state})` : ""}` : String(n))).join(", ");
  }

  async function refreshOwner(id) {
    const r = await api("GET", `/api/rooms/${encodeURIComponent(id)}`);
    const room = state.rooms.get(id);
    if (!room) return;
    room.owner = r.ok ? String(r.data.owner ?? "") : "";
    if (state.current === id) renderOwner(room, r.ok ? "" : r.error.message);
  }
  function renderOwner(room, err) {
    ui.roomOwner.replaceChildren();
    if (room.owner) ui.roomOwner.append(h("span", { className: "wide-only", text: "room " }), `owned by ${room.owner}`);
    else if (err) ui.roomOwner.textContent = "owner unknown";
    ui.roomOwner.title = err || (room.owner ? `Room #${room.id} is owned by node ${room.owner}` : "");
  }

  // ---------------------------------------------------------------- join / leave
  /** @param {Room} room @param {(error: {code: string, message: string}) => void} [onFail] */
  async function joinRoom(room, onFail) {
    if (!state.socket?.connected || room.joining || room.joined) return;
    clearTimeout(room.joinTimer);
    room.joining = true;
    const gen = state.connGen;
    const payload = { room: room.id };
    if (room.hasState) payload.since = room.resumeSeq;
    const ack = await request("join", payload);
    if (gen !== state.connGen || state.rooms.get(room.id) !== room) return; // stale
    room.joining = false;
    if (!ack.ok) {
      const { code, message } = ack.error;
      if (code === "unauthorized") return sessionExpired();
      const retryable = RETRYABLE.has(code);
      // A room the user just asked for that the server refuses (bad name, forbidden…) is dropped again.
      if (onFail && !room.hasState && !retryable) return onFail(ack.error);
      onFail?.(null);
      room.error = `${message} (${code})`;
      if (retryable && code !== "disconnected") { // "disconnected": joined again on the next connect
        room.joinRetry++;
        room.joinTimer = window.setTimeout(() => joinRoom(room), Math.min(500 * 2 ** room.joinRetry, 10000));
      }
      renderRoomList();
      if (state.current === room.id) { renderHeader(); renderTop(room); }
      return;
    }
    room.joined = true;
    room.joinRetry = 0;
    room.error = "";
    room.members = new Set(Array.isArray(ack.members) ? ack.members.filter((m) => typeof m === "string") : []);
    const latest = Number.isInteger(ack.seq) ? ack.seq : 0;
    if (!room.hasState) {
      // First join without local state: live messages follow the ack's seq; the last page comes from history.
      room.hasState = true;
      room.anchor = latest;
      room.contig = Math.max(room.contig, latest);
      advanceContig(room);
      room.history = latest === 0 ? "start" : "idle";
    }
    renderRoomList();
    if (state.current === room.id) {
      renderMembers(); renderHeader(); renderTop(room); renderTyping();
      if (room.history === "idle") loadInitialHistory(room);
    }
    onFail?.(null);
    flushSends(room);
  }

  /** @param {string} id */
  function userJoin(id) {
    setError(ui.roomError, "");
    if (state.rooms.has(id)) {
      switchRoom(id);
      return;
    }
    const room = addRoom(id);
    saveRooms();
    renderRoomList();
    if (!state.socket?.connected) { switchRoom(id); return; } // joined on connect
    ui.roomJoin.disabled = true;
    // Switch to the room once the server accepted the join; a refusal leaves the user where they were.
    joinRoom(room, (error) => {
      ui.roomJoin.disabled = false;
      if (!error) {
        if (state.rooms.get(id) === room) switchRoom(id);
        return;
      }
      removeRoom(id);
      setError(ui.roomError, `Could not join #${id}: ${error.message} (${error.code})`);
      ui.roomInput.value = id;
      ui.roomInput.focus();
    });
  }

  function removeRoom(id) {
    const room = state.rooms.get(id);
    if (!room) return;
    clearTimeout(room.joinTimer);
    clearTimeout(room.holeTimer);
    clearTyping(room);
    for (const p of room.pending.values()) clearTimeout(p.timer);
    state.rooms.delete(id);
    const idx = state.order.indexOf(id);
    if (idx >= 0) state.order.splice(idx, 1);
    if (state.current === id) state.current = state.order[Math.min(idx, state.order.length - 1)] ?? null;
    saveRooms();
    renderRoomList();
    showRoom();
  }

  async function leaveRoom(id) {
    const room = state.rooms.get(id);
    if (!room) return;
    if (room.joined) request("leave", { room: id }); // best effort; we forget the room either way
    removeRoom(id);
  }

  ui.roomForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = ui.roomInput.value.trim().toLowerCase();
    if (!ROOM_RE.test(id)) {
      ui.roomInput.setAttribute("aria-invalid", "true");
      setError(ui.roomError, "Room names: 1–64 of a-z 0-9 . _ - , starting with a letter or digit.");
      return;
    }
    ui.roomInput.removeAttribute("aria-invalid");
    ui.roomInput.value = "";
    userJoin(id);
  });
  ui.roomInput.addEventListener("input", () => {
    ui.roomInput.removeAttribute("aria-invalid");
    setError(ui.roomError, "");
  });

  // ---------------------------------------------------------------- server events
  function onMessage(m) {
    if (!validMsg(m)) return;
    const room = state.rooms.get(m.room);
    if (!room) return;
    const isNew = insertMessage(room, m, "live");
    if (m.user === state.user && typeof m.id === "string") confirmPending(room, m.id);
    if (room.typing.has(m.user)) { clearTimeout(room.typing.get(m.user)); room.typing.delete(m.user); if (state.current === room.id) renderTyping(); }
    if (isNew && m.user !== state.user && m.seq > room.anchor && (state.current !== room.id || document.hidden)) {
      room.unread++;
      renderRoomList();
      renderTitle();
    }
  }

  function onPresence(p) {
    if (!isObj(p) || typeof p.room !== "string" || typeof p.user !== "string") return;
    const room = state.rooms.get(p.room);
    if (!room) return;
    if (p.event === "join") room.members.add(p.user);
    else if (p.event === "leave") {
      room.members.delete(p.user);
      if (room.typing.has(p.user)) { clearTimeout(room.typing.get(p.user)); room.typing.delete(p.user); }
    } else return;
    if (state.current === room.id) { renderMembers(); renderTyping(); }
  }

  function onTyping(t) {
    if (!isObj(t) || typeof t.room !== "string" || typeof t.user !== "string" || t.user === state.user) return;
    const room = state.rooms.get(t.room);
    if (!room) return;
    clearTimeout(room.typing.get(t.user));
    room.typing.set(t.user, window.setTimeout(() => {
      room.typing.delete(t.user);
      if (state.current === room.id) renderTyping();
    }, TYPING_SHOW_MS));
    if (state.current === room.id) renderTyping();
  }

  /** `gap {room, after, next}`: messages in (after, next) are older than retention and gone for good. */
  function onGap(g) {
    if (!isObj(g) || typeof g.room !== "string") return;
    const room = state.rooms.get(g.room);
    if (!room) return;
    const after = Number.isInteger(g.after) ? g.after : room.resumeSeq;
    const next = Number.isInteger(g.next) ? g.next : after + 1;
    const range = next - 1 > after + 1 ? `#${after + 1}–#${next - 1}` : `#${after + 1}`;
    insertNotice(room, next - 0.5, `Messages ${range} are no longer available (older than the retention period).`);
    if (next - 1 > room.contig) { room.contig = next - 1; advanceContig(room); }
  }

  /** An operator restored the room to `seq`: what we hold above it is gone; seqs continue from there. */
  function onReset(r) {
    if (!isObj(r) || typeof r.room !== "string" || !Number.isInteger(r.seq)) return;
    const room = state.rooms.get(r.room);
    if (!room) return;
    for (const seq of [...room.messages.keys()]) if (seq > r.seq) room.messages.delete(seq);
    room.items = room.items.filter((it) => {
      const drop = typeof it.key === "number" && it.key > r.seq;
      if (drop) it.el.remove();
      return !drop;
    });
    room.contig = Math.min(room.contig, r.seq);
    room.anchor = Math.min(room.anchor, r.seq);
    insertNotice(room, r.seq + 0.5, `History was restored to #${r.seq} by an operator; later messages were removed.`);
  }

  // ---------------------------------------------------------------- history
  function loadInitialHistory(room) {
    if (room.history !== "idle") return;
    if (room.anchor === 0) { room.history = "start"; renderTop(room); return; }
    loadHistory(room, room.anchor + 1);
  }
  function loadOlder(room) {
    if (room.history !== "more" && room.history !== "error" && room.history !== "idle") return;
    const low = room.lowestSeq || room.anchor + 1;
    if (low <= 1) { room.history = "start"; renderTop(room); return; }
    loadHistory(room, low);
  }

  async function loadHistory(room, before) {
    if (!room.joined) return; // loaded once joined
    const prev = room.history === "loading" || room.history === "error" ? (room.messages.size ? "more" : "idle") : room.history;
    room.history = "loading";
    renderTop(room);
    const ack = await request("history", { room: room.id, before, limit: PAGE });
    if (state.rooms.get(room.id) !== room) return;
    if (!ack.ok && (ack.error.code === "disconnected" || ack.error.code === "not_joined")) {
      room.history = prev; // tried again after the (re)join
      if (ack.error.code === "not_joined") { room.joined = false; joinRoom(room); }
      renderTop(room);
      return;
    }
    if (!ack.ok) {
      room.history = "error";
      room.error = `${ack.error.message} (${ack.error.code})`;
      renderTop(room);
      return;
    }
    const msgs = (Array.isArray(ack.messages) ? ack.messages : [])
      .map((m) => (isObj(m) ? { ...m, room: room.id } : m)).filter(validMsg).filter((m) => m.seq < before);
    withScrollAnchor(room, () => { for (const m of msgs) insertMessage(room, m, "history"); });
    const low = msgs.reduce((a, m) => Math.min(a, m.seq), before);
    if (low <= 1) room.history = "start";
    else if (msgs.length === 0 || msgs.length < PAGE) room.history = "retention"; // older ones expired
    else room.history = "more";
    renderTop(room);
    // If the first page does not fill the view, keep going.
    if (state.current === room.id && room.history === "more" && ui.messages.scrollHeight <= ui.messages.clientHeight) loadOlder(room);
  }

  // ---------------------------------------------------------------- sending
  function submitMessage() {
    const room = state.current ? state.rooms.get(state.current) : null;
    if (!room) return;
    const text = ui.input.value;
    if (!text.trim()) return;
    if (textLength(text) > MAX_TEXT) { renderCounter(); return; }
    /** @type {Pending} */
    const p = { id: uuid(), text, status: "sending", error: "", attempts: 0, el: null, timer: 0, inflight: false };
    room.pending.set(p.id, p);
    room.sendQueue.push(p);
    room.lastTypingSent = 0; // receivers drop the indicator when the message lands; typing again is news
    ui.input.value = "";
    autoGrow();
    renderCounter();
    room.stick = true;
    renderPending(room, p);
    scrollToBottom();
    flushSends(room);
  }

  /** Sends one message at a time per room so seq order matches typing order, retrying with the SAME id. */
  async function flushSends(room) {
    if (room.sending) return;
    room.sending = true;
    try {
      while (room.sendQueue.length > 0 && state.rooms.get(room.id) === room) {
        const p = /** @type {Pending} */ (room.sendQueue[0]);
        if (!room.pending.has(p.id)) { room.sendQueue.shift(); continue; } // confirmed meanwhile
        if (!state.socket?.connected || !room.joined) {
          p.status = "queued";
          renderPending(room, p);
          return; // flushSends runs again after the room is (re)joined
        }
        p.status = "sending";
        p.attempts++;
        renderPending(room, p);
        const ack = await request("send", { room: room.id, text: p.text, id: p.id });
        if (!room.pending.has(p.id)) { room.sendQueue.shift(); continue; }
        if (ack.ok && Number.isInteger(ack.seq)) {
          room.sendQueue.shift();
          insertMessage(room, { room: room.id, seq: ack.seq, id: p.id, user: state.user, text: p.text, ts: Number(ack.ts) || Date.now() }, "live");
          confirmPending(room, p.id);
          continue;
        }
        const code = ack.ok ? "internal" : ack.error.code;
        const message = ack.ok ? "Malformed answer from the server." : ack.error.message;
        if (code === "unauthorized") { sessionExpired(); return; }
        if (code === "not_joined") {
          room.joined = false;
          p.status = "queued";
          renderPending(room, p);
          joinRoom(room); // flushes again when the join succeeds
          return;
        }
        if (RETRYABLE.has(code) && p.attempts < 8) {
          p.status = "retrying";
          p.error = message;
          renderPending(room, p);
          if (code === "disconnected") return;
          await new Promise((r) => { p.timer = window.setTimeout(r, Math.min(250 * 2 ** p.attempts, 8000)); });
          continue;
        }
        // Permanent failure (bad_request, too_large, forbidden, ... or too many attempts): let the user retry.
        room.sendQueue.shift();
        p.status = "failed";
        p.error = `${message} (${code})`;
        renderPending(room, p);
      }
    } finally {
      room.sending = false;
    }
  }

  function retryPending(room, id) {
    const p = room.pending.get(id);
    if (!p || p.status !== "failed") return;
    p.attempts = 0;
    p.status = "sending";
    p.error = "";
    room.sendQueue.push(p);
    renderPending(room, p);
    flushSends(room);
  }
  function discardPending(room, id) {
    const p = room.pending.get(id);
    if (!p) return;
    room.pending.delete(id);
    p.el?.remove();
  }
  function confirmPending(room, id) {
    const p = room.pending.get(id);
    if (!p) return;
    room.pending.delete(id); // a retry timer still running just finds it gone
    p.el?.remove();
  }

  function sendTyping() {
    const room = state.current ? state.rooms.get(state.current) : null;
    if (!room || !room.joined || !state.socket?.connected) return;
    const now = Date.now();
    if (now - room.lastTypingSent < TYPING_THROTTLE_MS) return;
    room.lastTypingSent = now;
    state.socket.emit("typing", { room: room.id });
  }

  ui.composer.addEventListener("submit", (e) => { e.preventDefault(); submitMessage(); ui.input.focus(); });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submitMessage();
    }
  });
  ui.input.addEventListener("input", () => {
    autoGrow();
    renderCounter();
    if (ui.input.value.trim()) sendTyping();
  });

  function autoGrow() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 180)}px`;
  }

  // ---------------------------------------------------------------- message list (per room, ordered by seq)
  /** Binary search: index of the first item with key > `key`. */
  function upperBound(items, key) {
    let lo = 0, hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (/** @type {any} */ (items[mid]).key <= key) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Insert a message once (deduplicated by seq). Returns true if it was new. */
  function insertMessage(room, m, source) {
    if (room.messages.has(m.seq)) return false;
    const msg = { room: m.room, seq: m.seq, id: String(m.id ?? ""), user: m.user, text: m.text, ts: Number(m.ts) || 0 };
    room.messages.set(msg.seq, msg);
    const el = renderMessage(msg);
    const isCurrent = state.current === room.id;
    const atBottom = isCurrent && isAtBottom();
    placeItem(room, { key: msg.seq, el, user: msg.user, ts: msg.ts });
    if (msg.seq === room.contig + 1) advanceContig(room);
    else if (room.hasState && msg.seq > room.contig + 1 && source === "live") scheduleHoleFill(room);
    if (isCurrent && source === "live") {
      if (atBottom || room.stick) scrollToBottom();
      else ui.jumpLatest.hidden = false;
    }
    return true;
  }

  function insertNotice(room, key, text) {
    const el = h("div", { className: "notice warn", text, attrs: { role: "note" }, dataset: { testid: "gap" } });
    withScrollAnchor(room, () => placeItem(room, { key, el }));
  }

  function placeItem(room, item) {
    const idx = upperBound(room.items, item.key);
    const next = room.items[idx];
    room.items.splice(idx, 0, item);
    room.list.insertBefore(item.el, next ? next.el : null);
    regroup(room, idx);
    regroup(room, idx + 1);
  }

  /** Consecutive messages from the same user within a few minutes are shown as one group. */
  function regroup(room, idx) {
    const it = room.items[idx];
    if (!it || !it.user) return;
    const prev = room.items[idx - 1];
    const cont = !!prev && prev.user === it.user && Number.isInteger(prev.key) && it.key === prev.key + 1 &&
      Math.abs((it.ts ?? 0) - (prev.ts ?? 0)) < GROUP_WINDOW_MS;
    it.el.classList.toggle("cont", cont);
  }

  /**
   * Live messages arrive in seq order, so a hole before a live message should close within moments (an ack
   * can overtake the broadcast of an earlier message). If it does not, fetch the missing range. The server
   * should never make this necessary, hence the warning.
   */
  function scheduleHoleFill(room) {
    if (room.holeTimer) return;
    room.holeTimer = window.setTimeout(async () => {
      room.holeTimer = 0;
      if (state.rooms.get(room.id) !== room || !room.joined || room.contig >= room.highestSeq) return;
      const after = room.contig;
      const ack = await request("history", { room: room.id, after, limit: 200 });
      if (!ack.ok || state.rooms.get(room.id) !== room) return;
      const msgs = (Array.isArray(ack.messages) ? ack.messages : [])
        .map((m) => (isObj(m) ? { ...m, room: room.id } : m)).filter(validMsg);
      let filled = 0;
      for (const m of msgs) if (insertMessage(room, m, "fill")) filled++;
      if (filled > 0) console.warn(`fractal: filled ${filled} undelivered message(s) in #${room.id} after seq ${after}`);
      if (filled > 0 && room.contig < room.highestSeq) scheduleHoleFill(room); // no progress: give up
    }, 1500);
  }

  function advanceContig(room) {
    if (room.contig < room.anchor) room.contig = room.anchor;
    while (room.messages.has(room.contig + 1)) room.contig++;
  }

  function avatar(user) {
    return h("div", { className: "avatar", text: (user[0] || "?"), attrs: { style: `background:hsl(${hue(user)} 55% 48%)`, "aria-hidden": "true" } });
  }

  function renderMessage(m) {
    const own = m.user === state.user;
    const time = h("time", { className: "time", text: fmtTime(m.ts), attrs: { datetime: new Date(m.ts || 0).toISOString(), title: new Date(m.ts || 0).toLocaleString() } });
    return h("div", {
      className: `msg${own ? " own" : ""}`,
      dataset: { testid: "message", seq: m.seq, id: m.id, user: m.user },
      attrs: { title: `${m.user} · ${new Date(m.ts || 0).toLocaleString()} · #${m.seq}` },
    },
      avatar(m.user),
      h("div", { className: "meta" }, h("span", { className: "user", text: m.user }), time, h("span", { className: "seq", text: `#${m.seq}`, attrs: { title: `seq ${m.seq}` } })),
      h("div", { className: "text", text: m.text, dataset: { testid: "message-text" } }),
    );
  }

  function renderPending(room, p) {
    const label = p.status === "queued" ? "waiting for connection…"
      : p.status === "retrying" ? "retrying…"
      : p.status === "failed" ? `not sent: ${p.error}`
      : "sending…";
    const status = h("span", { className: "seq", text: label, attrs: { title: p.error || label } });
    if (p.status === "failed") {
      status.append(
        h("button", { className: "retry-btn", text: "retry", attrs: { type: "button" }, on: { click: () => retryPending(room, p.id) } }),
        h("button", { className: "retry-btn", text: "discard", attrs: { type: "button" }, on: { click: () => discardPending(room, p.id) } }),
      );
    }
    const el = h("div", {
      className: `msg own pending${p.status === "failed" ? " failed" : ""}`,
      dataset: { testid: "message-pending", id: p.id, status: p.status },
    },
      avatar(state.user || "?"),
      h("div", { className: "meta" }, h("span", { className: "user", text: state.user }), status),
      h("div", { className: "text", text: p.text }),
    );
    if (p.el && p.el.parentNode) p.el.replaceWith(el);
    else room.pendingList.append(el);
    p.el = el;
  }

  function renderTop(room) {
    const top = room.top;
    top.replaceChildren();
    top.className = "history-top";
    switch (room.history) {
      case "loading": top.textContent = "Loading earlier messages…"; break;
      case "start": top.textContent = `This is the beginning of #${room.id}.`; break;
      case "retention": top.textContent = "Older messages are no longer available."; break;
      case "error":
        top.className = "notice warn";
        top.append(`Couldn't load history: ${room.error} `,
          h("button", { text: "Retry", attrs: { type: "button" }, on: { click: () => (room.messages.size || room.anchor === 0 ? loadOlder(room) : (room.history = "idle", loadInitialHistory(room))) } }));
        break;
      case "more":
        top.append(h("button", { className: "retry-btn", text: "Load earlier messages", attrs: { type: "button" }, on: { click: () => loadOlder(room) } }));
        break;
      default: top.textContent = room.joined ? "" : "Joining…";
    }
  }

  function withScrollAnchor(room, fn) {
    if (state.current !== room.id) { fn(); return; }
    const box = ui.messages;
    const atBottom = isAtBottom();
    const before = box.scrollHeight, top = box.scrollTop;
    fn();
    if (atBottom && room.stick) scrollToBottom();
    else box.scrollTop = top + (box.scrollHeight - before);
  }
  function isAtBottom() {
    const box = ui.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
  }
  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    ui.jumpLatest.hidden = true;
  }

  ui.messages.addEventListener("scroll", () => {
    const room = state.current ? state.rooms.get(state.current) : null;
    if (!room) return;
    room.stick = isAtBottom();
    room.scrollTop = ui.messages.scrollTop;
    if (room.stick) ui.jumpLatest.hidden = true;
    if (ui.messages.scrollTop < 80 && room.history === "more") loadOlder(room);
  }, { passive: true });
  ui.jumpLatest.addEventListener("click", () => {
    const room = state.current ? state.rooms.get(state.current) : null;
    if (room) room.stick = true;
    scrollToBottom();
  });

  // ---------------------------------------------------------------- rendering: rooms, header, members, typing
  function switchRoom(id) {
    if (!state.rooms.has(id)) return;
    const prev = state.current ? state.rooms.get(state.current) : null;
    if (prev && prev.id !== id) prev.scrollTop = ui.messages.scrollTop;
    state.current = id;
    saveRooms();
    closeDrawer();
    showRoom();
    refreshOwner(id);
  }

  function showRoom() {
    const room = state.current ? state.rooms.get(state.current) : null;
    ui.messages.replaceChildren();
    ui.jumpLatest.hidden = true;
    ui.emptyRoom.hidden = !!room;
    ui.input.disabled = !room;
    if (!room) {
      ui.roomName.textContent = "No room selected";
      ui.roomOwner.textContent = "";
      renderMembers();
      renderTyping();
      renderRoomList();
      renderCounter();
      renderTitle();
      return;
    }
    room.unread = 0;
    ui.messages.append(room.root);
    renderHeader();
    renderTop(room);
    renderOwner(room, "");
    renderMembers();
    renderTyping();
    renderRoomList();
    renderCounter();
    renderTitle();
    if (room.stick) scrollToBottom(); else ui.messages.scrollTop = room.scrollTop;
    if (room.joined && room.history === "idle") loadInitialHistory(room);
    if (window.matchMedia("(min-width: 681px)").matches) ui.input.focus({ preventScroll: true });
  }

  function renderHeader() {
    const room = state.current ? state.rooms.get(state.current) : null;
    if (!room) return;
    ui.roomName.textContent = `#${room.id}`;
    ui.roomName.title = room.error ? `#${room.id}: ${room.error}` : `#${room.id}`;
  }

  function renderRoomList() {
    const frag = document.createDocumentFragment();
    for (const id of state.order) {
      const room = state.rooms.get(id);
      if (!room) continue;
      const active = state.current === id;
      const btn = h("button", {
        className: "room-btn", attrs: { type: "button", "aria-current": active ? "true" : "false", title: room.error || `#${id}` },
        on: { click: () => switchRoom(id) },
      },
        h("span", { className: "hash", text: "#" }),
        h("span", { className: "room-label", text: id }),
        room.unread > 0 && !active ? h("span", { className: "unread", text: room.unread > 99 ? "99+" : room.unread, dataset: { testid: "unread" } }) : null,
        !room.joined && state.socket?.connected ? h("span", { className: "room-state", text: room.error ? "retrying" : "joining…" }) : null,
      );
      const leave = h("button", {
        className: "leave-btn", text: "×", attrs: { type: "button", title: `Leave #${id}`, "aria-label": `Leave #${id}` },
        on: { click: (e) => { e.stopPropagation(); leaveRoom(id); } },
      });
      frag.append(h("li", { className: `room-item${active ? " active" : ""}`, dataset: { testid: "room-item", room: id } }, btn, leave));
    }
    ui.roomList.replaceChildren(frag);
    ui.noRooms.hidden = state.order.length > 0;
  }

  function renderMembers() {
    const room = state.current ? state.rooms.get(state.current) : null;
    const names = room ? [...room.members].sort((a, b) => (a === state.user ? -1 : b === state.user ? 1 : a.localeCompare(b))) : [];
    ui.members.replaceChildren(...names.map((name) => h("li", { className: "member", dataset: { testid: "member", user: name } },
      h("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
      h("span", { className: "name", text: name }),
      name === state.user ? h("span", { className: "you", text: "(you)" }) : null,
    )));
    ui.membersCount.textContent = room ? String(names.length) : "";
    ui.membersCountBtn.textContent = room ? `(${names.length})` : "";
  }

  function renderTyping() {
    const room = state.current ? state.rooms.get(state.current) : null;
    const who = room ? [...room.typing.keys()].filter((u) => u !== state.user) : [];
    let text = "";
    if (who.length === 1) text = `${who[0]} is typing…`;
    else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
    else if (who.length > 2) text = `${who.length} people are typing…`;
    ui.typing.textContent = text;
  }
  function clearTyping(room) {
    for (const t of room.typing.values()) clearTimeout(t);
    room.typing.clear();
    if (state.current === room.id) renderTyping();
  }

  /** Characters as the server counts them: code points, so an emoji counts once. */
  function textLength(text) {
    let n = 0;
    for (const _ of text) n++; // eslint-disable-line no-unused-vars
    return n;
  }

  function renderCounter() {
    const n = textLength(ui.input.value);
    ui.charCount.textContent = `${n} / ${MAX_TEXT}`;
    const over = n > MAX_TEXT;
    ui.charCount.classList.toggle("over", over);
    ui.charCount.title = over ? `Messages are limited to ${MAX_TEXT} characters.` : "";
    ui.send.disabled = !state.current || over || !ui.input.value.trim();
  }

  function renderTitle() {
    let n = 0;
    for (const r of state.rooms.values()) n += r.unread;
    document.title = n > 0 ? `(${n}) Fractal Chat` : "Fractal Chat";
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    const room = state.current ? state.rooms.get(state.current) : null;
    if (room && room.unread) { room.unread = 0; renderRoomList(); }
    renderTitle();
  });

  // ---------------------------------------------------------------- responsive panels
  function closeDrawer() {
    ui.sidebar.classList.remove("open");
    ui.scrim.hidden = true;
    ui.toggleSidebar.setAttribute("aria-expanded", "false");
  }
  ui.toggleSidebar.addEventListener("click", () => {
    const open = !ui.sidebar.classList.contains("open");
    ui.sidebar.classList.toggle("open", open);
    ui.scrim.hidden = !open;
    ui.toggleSidebar.setAttribute("aria-expanded", String(open));
  });
  ui.scrim.addEventListener("click", closeDrawer);
  function openDrawer() {
    ui.sidebar.classList.add("open");
    ui.scrim.hidden = !window.matchMedia("(max-width: 680px)").matches;
    ui.toggleSidebar.setAttribute("aria-expanded", "true");
  }
  $("empty-join").addEventListener("click", () => { openDrawer(); ui.roomInput.focus(); });
  ui.toggleMembers.addEventListener("click", () => {
    const open = !ui.membersPanel.classList.contains("open");
    ui.membersPanel.classList.toggle("open", open);
    ui.toggleMembers.setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    closeDrawer();
    ui.membersPanel.classList.remove("open");
  });

  // ---------------------------------------------------------------- boot
  if (state.token && state.user) startChat();
  else showLogin("");
})();
