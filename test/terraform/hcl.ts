/**
 * Offline Terraform for the tests of terraform/: loads a module directory with @cdktf/hcl2json, and evaluates
 * its expressions the way `terraform plan` would for the parts that matter here (module counts and
 * arguments, locals, outputs, resource arguments, variable validations, templatefile), with the values of
 * resources that only exist after an apply (ids, ARNs, bucket names) standing in as markers `⟨address.attr⟩`.
 *
 * The expression language is parsed here (a small recursive-descent parser of HCL's expression and template
 * syntax), because hcl2json hands expressions back as source text. It covers what terraform/ uses: literals,
 * templates, references, attribute / index / splat traversals, function calls (the functions listed in
 * FUNCTIONS; anything else fails the test loudly), tuples, objects, for expressions, unary / binary operators
 * and conditionals. Like Terraform, a conditional only takes its chosen branch's errors, and iteration over
 * maps and sets goes in key order.
 */
import { parse } from "@cdktf/hcl2json";
import { expect } from "chai";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Body = Record<string, any>;

/** One Terraform module directory: its .tf files merged (hcl2json gives one JSON object per file). */
export interface TfModule {
  dir: string;
  files: Record<string, string>;
  resource: Record<string, Record<string, Body>>;
  data: Record<string, Record<string, Body>>;
  module: Record<string, Body>;
  variable: Record<string, Body>;
  output: Record<string, Body>;
  locals: Record<string, unknown>;
  provider: Record<string, Body[]>;
  moved: Body[];
  terraform: Body[];
}

export async function loadModule(dir: string): Promise<TfModule> {
  const m: TfModule = { dir, files: {}, resource: {}, data: {}, module: {}, variable: {}, output: {}, locals: {}, provider: {}, moved: [], terraform: [] };
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".tf")).sort()) {
    const src = readFileSync(path.join(dir, file), "utf8");
    m.files[file] = src;
    const j = (await parse(file, src)) as Body;
    for (const kind of ["resource", "data"] as const) {
      for (const [type, byName] of Object.entries((j[kind] ?? {}) as Record<string, Record<string, Body[]>>)) {
        for (const [name, blocks] of Object.entries(byName)) {
          expect(m[kind][type]?.[name], `${kind} ${type}.${name} declared twice in ${dir}`).to.equal(undefined);
          (m[kind][type] ??= {})[name] = blocks[0]!;
        }
      }
    }
    for (const kind of ["module", "variable", "output"] as const) {
      for (const [name, blocks] of Object.entries((j[kind] ?? {}) as Record<string, Body[]>)) {
        expect(m[kind][name], `${kind} ${name} declared twice in ${dir}`).to.equal(undefined);
        m[kind][name] = blocks[0]!;
      }
    }
    for (const block of (j.locals ?? []) as Body[]) {
      for (const name of Object.keys(block)) expect(m.locals, `local.${name} declared twice in ${dir}`).to.not.have.property(name);
      Object.assign(m.locals, block);
    }
    for (const [name, blocks] of Object.entries((j.provider ?? {}) as Record<string, Body[]>)) (m.provider[name] ??= []).push(...blocks);
    m.moved.push(...((j.moved ?? []) as Body[]));
    m.terraform.push(...((j.terraform ?? []) as Body[]));
  }
  return m;
}

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

type Op = { k: "attr"; name: string } | { k: "index"; key: Node };
export type Node =
  | { k: "lit"; v: unknown }
  | { k: "tmpl"; parts: (string | Node)[] }
  | { k: "ref"; name: string }
  | { k: "attr"; obj: Node; name: string }
  | { k: "index"; obj: Node; key: Node }
  | { k: "splat"; obj: Node; rest: Op[] }
  | { k: "call"; name: string; args: Node[]; expand: boolean }
  | { k: "tuple"; items: Node[] }
  | { k: "object"; items: [Node, Node][] }
  | { k: "for"; obj: boolean; keyVar: string | undefined; valVar: string; coll: Node; keyExpr: Node | undefined; valExpr: Node; group: boolean; cond: Node | undefined }
  | { k: "un"; op: string; x: Node }
  | { k: "bin"; op: string; l: Node; r: Node }
  | { k: "cond"; c: Node; t: Node; f: Node };

class Parser {
  constructor(
    readonly src: string,
    public pos = 0,
  ) {}

  fail(what: string): never {
    throw new Error(`HCL parse error: ${what} at ${this.pos} in ${JSON.stringify(this.src.slice(Math.max(0, this.pos - 40), this.pos + 40))}`);
  }

  ws(): void {
    for (;;) {
      const c = this.src[this.pos];
      if (c === " " || c === "\t" || c === "\n" || c === "\r") this.pos++;
      else if (c === "#" || (c === "/" && this.src[this.pos + 1] === "/")) while (this.pos < this.src.length && this.src[this.pos] !== "\n") this.pos++;
      else if (c === "/" && this.src[this.pos + 1] === "*") {
        const end = this.src.indexOf("*/", this.pos + 2);
        if (end < 0) this.fail("unterminated comment");
        this.pos = end + 2;
      } else return;
    }
  }

  /** Whether the next token is `s` (an operator, or a keyword when `word`); consumes it if so. */
  eat(s: string, word = false): boolean {
    this.ws();
    if (!this.src.startsWith(s, this.pos)) return false;
    if (word && /[A-Za-z0-9_-]/.test(this.src[this.pos + s.length] ?? "")) return false;
    this.pos += s.length;
    return true;
  }

  need(s: string): void {
    if (!this.eat(s)) this.fail(`expected ${s}`);
  }

  peekWord(): string | undefined {
    this.ws();
    return /^[A-Za-z_][A-Za-z0-9_-]*/.exec(this.src.slice(this.pos))?.[0];
  }

  ident(): string {
    const w = this.peekWord();
    if (w === undefined) this.fail("expected a name");
    this.pos += w.length;
    return w;
  }

  expr(): Node {
    const c = this.or();
    if (this.eat("?")) {
      const t = this.expr();
      this.need(":");
      const f = this.expr();
      return { k: "cond", c, t, f };
    }
    return c;
  }

  private binary(next: () => Node, ops: string[]): Node {
    let l = next();
    for (;;) {
      this.ws();
      const after = (o: string) => this.src[this.pos + o.length];
      // "<" and ">" are not the start of "<=", ">=" (their own operators) or "=>" (a for expression's arrow).
      const op = ops.find((o) => this.src.startsWith(o, this.pos) && !((o === "<" || o === ">") && after(o) === "="));
      if (op === undefined) return l;
      this.pos += op.length;
      l = { k: "bin", op, l, r: next() };
    }
  }

  or = (): Node => this.binary(this.and, ["||"]);
  and = (): Node => this.binary(this.eq, ["&&"]);
  eq = (): Node => this.binary(this.cmp, ["==", "!="]);
  cmp = (): Node => this.binary(this.add, ["<=", ">=", "<", ">"]);
  add = (): Node => this.binary(this.mul, ["+", "-"]);
  mul = (): Node => this.binary(this.unary, ["*", "/", "%"]);

  unary = (): Node => {
    this.ws();
    if (this.src[this.pos] === "!" && this.src[this.pos + 1] !== "=") {
      this.pos++;
      return { k: "un", op: "!", x: this.unary() };
    }
    if (this.src[this.pos] === "-") {
      this.pos++;
      return { k: "un", op: "-", x: this.unary() };
    }
    return this.postfix();
  };

  private traversalOp(): Op | "splat" | undefined {
    this.ws();
    if (this.src.startsWith("[*]", this.pos)) {
      this.pos += 3;
      return "splat";
    }
    if (this.src.startsWith(".*", this.pos)) {
      this.pos += 2;
      return "splat";
    }
    if (this.src[this.pos] === "." && this.src[this.pos + 1] !== ".") {
      this.pos++;
      const num = /^[0-9]+/.exec(this.src.slice(this.pos));
      if (num) {
        this.pos += num[0].length;
        return { k: "index", key: { k: "lit", v: Number(num[0]) } };
      }
      return { k: "attr", name: this.ident() };
    }
    if (this.src[this.pos] === "[") {
      this.pos++;
      const key = this.expr();
      this.need("]");
      return { k: "index", key };
    }
    return undefined;
  }

  postfix(): Node {
    let n = this.primary();
    for (;;) {
      const op = this.traversalOp();
      if (op === undefined) return n;
      if (op === "splat") {
        const rest: Op[] = [];
        for (;;) {
          const save = this.pos;
          const o = this.traversalOp();
          if (o === undefined || o === "splat") {
            this.pos = save;
            break;
          }
          rest.push(o);
        }
        n = { k: "splat", obj: n, rest };
      } else n = op.k === "attr" ? { k: "attr", obj: n, name: op.name } : { k: "index", obj: n, key: op.key };
    }
  }

  primary(): Node {
    this.ws();
    const c = this.src[this.pos];
    if (c === undefined) this.fail("unexpected end");
    const num = /^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.src.slice(this.pos));
    if (num) {
      this.pos += num[0].length;
      return { k: "lit", v: Number(num[0]) };
    }
    if (c === '"') {
      this.pos++;
      return template(this, '"');
    }
    if (c === "(") {
      this.pos++;
      const e = this.expr();
      this.need(")");
      return e;
    }
    if (c === "[") {
      this.pos++;
      if (this.peekWord() === "for") return this.forExpr(false);
      const items: Node[] = [];
      while (!this.eat("]")) {
        items.push(this.expr());
        if (!this.eat(",")) {
          this.need("]");
          break;
        }
      }
      return { k: "tuple", items };
    }
    if (c === "{") {
      this.pos++;
      if (this.peekWord() === "for") return this.forExpr(true);
      const items: [Node, Node][] = [];
      while (!this.eat("}")) {
        const word = this.peekWord();
        let key: Node;
        const save = this.pos;
        if (word !== undefined) {
          this.pos += word.length;
          this.ws();
          if ((this.src[this.pos] === "=" && this.src[this.pos + 1] !== "=") || this.src[this.pos] === ":") key = { k: "lit", v: word };
          else {
            this.pos = save;
            key = this.expr();
          }
        } else key = this.expr();
        if (!this.eat("=") && !this.eat(":")) this.fail("expected = in an object");
        items.push([key, this.expr()]);
        this.eat(",");
      }
      return { k: "object", items };
    }
    const word = this.peekWord();
    if (word === undefined) this.fail(`unexpected ${JSON.stringify(c)}`);
    this.pos += word.length;
    if (word === "true" || word === "false") return { k: "lit", v: word === "true" };
    if (word === "null") return { k: "lit", v: null };
    this.ws();
    if (this.src[this.pos] === "(") {
      this.pos++;
      const args: Node[] = [];
      let expand = false;
      while (!this.eat(")")) {
        args.push(this.expr());
        if (this.eat("...")) expand = true;
        if (!this.eat(",")) {
          this.need(")");
          break;
        }
      }
      return { k: "call", name: word, args, expand };
    }
    return { k: "ref", name: word };
  }

  forExpr(obj: boolean): Node {
    this.ident(); // for
    let keyVar: string | undefined;
    let valVar = this.ident();
    if (this.eat(",")) {
      keyVar = valVar;
      valVar = this.ident();
    }
    if (!this.eat("in", true)) this.fail("expected in");
    const coll = this.expr();
    this.need(":");
    let keyExpr: Node | undefined;
    let valExpr = this.expr();
    let group = false;
    if (obj) {
      this.need("=>");
      keyExpr = valExpr;
      valExpr = this.expr();
      group = this.eat("...");
    }
    const cond = this.eat("if", true) ? this.expr() : undefined;
    this.need(obj ? "}" : "]");
    return { k: "for", obj, keyVar, valVar, coll, keyExpr, valExpr, group, cond };
  }
}

/**
 * A template, from the parser's position to `end` ('"' for a quoted string, "" for the end of the text).
 * Quoted strings process HCL's backslash escapes; template files and hcl2json's already-unescaped literal
 * text do not. `$${` and `%%{` stand for literal `${` and `%{`.
 */
function template(p: Parser, end: '"' | ""): Node {
  const parts: (string | Node)[] = [];
  let lit = "";
  const src = p.src;
  for (;;) {
    if (p.pos >= src.length) {
      if (end === "") break;
      p.fail("unterminated string");
    }
    const c = src[p.pos]!;
    if (end === '"' && c === '"') {
      p.pos++;
      break;
    }
    if (end === '"' && c === "\\") {
      const e = src[p.pos + 1];
      const map: Record<string, string> = { n: "\n", t: "\t", r: "\r", '"': '"', "\\": "\\" };
      if (e !== undefined && e in map) {
        lit += map[e];
        p.pos += 2;
      } else if (e === "u") {
        lit += String.fromCharCode(parseInt(src.slice(p.pos + 2, p.pos + 6), 16));
        p.pos += 6;
      } else p.fail(`bad escape \\${e}`);
      continue;
    }
    if ((c === "$" || c === "%") && src[p.pos + 1] === c && src[p.pos + 2] === "{") {
      lit += `${c}{`;
      p.pos += 3;
      continue;
    }
    if (c === "%" && src[p.pos + 1] === "{") p.fail("template directives (%{ }) are not supported");
    if (c === "$" && src[p.pos + 1] === "{") {
      p.pos += 2;
      if (lit !== "") parts.push(lit);
      lit = "";
      if (p.src[p.pos] === "~") p.fail("strip markers are not supported");
      parts.push(p.expr());
      p.need("}");
      continue;
    }
    lit += c;
    p.pos++;
  }
  if (lit !== "" || parts.length === 0) parts.push(lit);
  return { k: "tmpl", parts };
}

const parsedExpr = new Map<string, Node>();
export function parseExpr(src: string): Node {
  let n = parsedExpr.get(src);
  if (n === undefined) {
    const p = new Parser(src);
    n = p.expr();
    p.ws();
    if (p.pos !== src.length) p.fail("trailing text");
    parsedExpr.set(src, n);
  }
  return n;
}

/** A string as hcl2json gives it (or a template file): literal text with ${...} interpolations. */
const parsedTmpl = new Map<string, Node>();
export function parseTemplate(src: string): Node {
  let n = parsedTmpl.get(src);
  if (n === undefined) {
    n = template(new Parser(src), "");
    parsedTmpl.set(src, n);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------

/** Sets are arrays (sorted, distinct) remembered here, so `for_each` and `for` give their elements as keys. */
const SETS = new WeakSet<unknown[]>();
function mkSet(items: unknown[]): unknown[] {
  const s = [...new Map(items.map((i) => [JSON.stringify(i), i])).values()].sort((a, b) => (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0));
  SETS.add(s);
  return s;
}
export const isSet = (v: unknown): boolean => Array.isArray(v) && SETS.has(v);

/** A resource's attribute that only exists after an apply. */
export const unknownAttr = (address: string, attr: string): string => `⟨${address}.${attr}⟩`;
export const isUnknown = (v: unknown): boolean => typeof v === "string" && v.includes("⟨");

/** An object whose properties are computed on first read (locals, outputs, variables). */
function lazyObject(keys: string[], get: (k: string) => unknown): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const k of keys) {
    let done = false;
    let v: unknown;
    Object.defineProperty(o, k, {
      enumerable: true,
      get: () => {
        if (!done) {
          v = get(k);
          done = true;
        }
        return v;
      },
    });
  }
  return o;
}

/** A resource instance: every attribute is unknown until apply, unless `known` gives its value (a data source's). */
function resourceInstance(address: string, known: (attr: string) => unknown): Record<string, unknown> {
  return new Proxy({} as Record<string, unknown>, {
    get: (_t, k) => {
      if (typeof k === "symbol" || k === "toJSON") return undefined;
      return known(k) ?? unknownAttr(address, k);
    },
  });
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "list";
  return typeof v;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i]) && ka.every((k) => deepEqual((a as any)[k], (b as any)[k]));
}

function toStr(v: unknown): string {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  throw new Error(`cannot use a ${typeName(v)} as a string`);
}

/** Go's encoding/json (which Terraform's jsonencode uses): sorted keys, <, > and & escaped. */
function jsonencode(v: unknown): string {
  const norm = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(norm);
    if (x !== null && typeof x === "object") return Object.fromEntries(Object.keys(x).sort().map((k) => [k, norm((x as any)[k])]));
    return x;
  };
  return JSON.stringify(norm(v))
    .replace(/</g, "\\u003c")
    .replace(/>/g, "\\u003e")
    .replace(/&/g, "\\u0026")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

function ipv4(cidr: string): [number, number] {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr);
  if (!m) throw new Error(`invalid CIDR ${cidr}`);
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  if (octets.some((o) => o > 255) || bits > 32) throw new Error(`invalid CIDR ${cidr}`);
  return [octets.reduce((a, o) => a * 256 + o, 0), bits];
}
const ipStr = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");

type Fn = (args: unknown[]) => unknown;
const FUNCTIONS: Record<string, Fn> = {
  abs: ([n]) => Math.abs(n as number),
  alltrue: ([l]) => (l as unknown[]).every((x) => x === true),
  anytrue: ([l]) => (l as unknown[]).some((x) => x === true),
  base64encode: ([s]) => Buffer.from(toStr(s)).toString("base64"),
  cidrhost: ([c, n]) => {
    const [addr, bits] = ipv4(toStr(c));
    const size = 2 ** (32 - bits);
    const i = n as number;
    if (i >= size || i < -size) throw new Error("cidrhost: host number out of range");
    const base = addr - (addr % size);
    return ipStr(base + (i < 0 ? size + i : i));
  },
  cidrsubnet: ([c, nb, nn]) => {
    const [addr, bits] = ipv4(toStr(c));
    const newBits = bits + (nb as number);
    if (newBits > 32 || (nn as number) >= 2 ** (nb as number)) throw new Error("cidrsubnet: not enough address space");
    const base = addr - (addr % 2 ** (32 - bits));
    return `${ipStr(base + (nn as number) * 2 ** (32 - newBits))}/${newBits}`;
  },
  coalesce: (args) => {
    const v = args.find((a) => a !== null && a !== "");
    if (v === undefined) throw new Error("coalesce: no non-null, non-empty-string arguments");
    return v;
  },
  compact: ([l]) => (l as unknown[]).filter((x) => x !== null && x !== ""),
  concat: (args) => args.flatMap((a) => {
    if (!Array.isArray(a)) throw new Error(`concat: a ${typeName(a)} is not a list`);
    return a;
  }),
  contains: ([l, v]) => {
    if (v === null) throw new Error("contains: the value must not be null");
    if (!Array.isArray(l)) throw new Error(`contains: a ${typeName(l)} is not a list or set`);
    return l.some((x) => deepEqual(x, v));
  },
  distinct: ([l]) => [...new Map((l as unknown[]).map((i) => [JSON.stringify(i), i])).values()],
  element: ([l, i]) => (l as unknown[])[(i as number) % (l as unknown[]).length],
  endswith: ([s, x]) => toStr(s).endsWith(toStr(x)),
  flatten: ([l]) => (l as unknown[]).flat(Infinity),
  floor: ([n]) => Math.floor(n as number),
  format: ([f, ...rest]) => {
    let i = 0;
    return toStr(f).replace(/%[sd%]/g, (m) => (m === "%%" ? "%" : toStr(rest[i++])));
  },
  join: ([sep, l]) => (l as unknown[]).map(toStr).join(toStr(sep)),
  jsonencode: ([v]) => jsonencode(v),
  keys: ([o]) => Object.keys(o as object).sort(),
  length: ([v]) => (typeof v === "string" ? [...v].length : Array.isArray(v) ? v.length : Object.keys(v as object).length),
  lookup: ([m, k, d]) => {
    if (m === null || typeof m !== "object" || Array.isArray(m)) throw new Error("lookup: not a map");
    if (Object.prototype.hasOwnProperty.call(m, toStr(k))) return (m as any)[toStr(k)];
    if (d === undefined) throw new Error(`lookup: no key ${String(k)} and no default`);
    return d;
  },
  lower: ([s]) => toStr(s).toLowerCase(),
  max: (args) => Math.max(...(args as number[])),
  merge: (args) => Object.assign({}, ...args.filter((a) => a !== null).map((a) => Object.fromEntries(Object.entries(a as object)))),
  min: (args) => Math.min(...(args as number[])),
  one: ([l]) => {
    const a = l as unknown[];
    if (a.length > 1) throw new Error("one: more than one element");
    return a.length === 0 ? null : a[0];
  },
  range: (args) => {
    const [start, end, step] = args.length === 1 ? [0, args[0] as number, 1] : [args[0] as number, args[1] as number, (args[2] as number | undefined) ?? 1];
    const out: number[] = [];
    for (let i = start; step > 0 ? i < end : i > end; i += step) out.push(i);
    return out;
  },
  regex: ([re, s]) => {
    const str = toStr(s);
    const m = new RegExp(toStr(re)).exec(str);
    if (m === null) throw new Error(`regex: no match of ${String(re)} in ${str}`);
    if (m.groups !== undefined) return { ...m.groups };
    return m.length > 1 ? m.slice(1) : m[0];
  },
  replace: ([s, a, b]) => toStr(s).split(toStr(a)).join(toStr(b)),
  setproduct: (lists) => (lists as unknown[][]).reduce<unknown[][]>((acc, l) => acc.flatMap((p) => l.map((x) => [...p, x])), [[]]),
  slice: ([l, a, b]) => {
    if ((b as number) > (l as unknown[]).length) throw new Error("slice: end index out of range");
    return (l as unknown[]).slice(a as number, b as number);
  },
  sort: ([l]) => [...(l as string[])].sort(),
  split: ([sep, s]) => toStr(s).split(toStr(sep)),
  startswith: ([s, x]) => toStr(s).startsWith(toStr(x)),
  substr: ([s, o, l]) => [...toStr(s)].slice(o as number, (l as number) < 0 ? undefined : (o as number) + (l as number)).join(""),
  tolist: ([l]) => [...(l as unknown[])],
  tonumber: ([v]) => {
    const n = typeof v === "number" ? v : Number(toStr(v));
    if (Number.isNaN(n) || (typeof v === "string" && v.trim() === "")) throw new Error(`tonumber: ${String(v)} is not a number`);
    return n;
  },
  toset: ([l]) => mkSet(l as unknown[]),
  tostring: ([v]) => (v === null ? null : toStr(v)),
  trimprefix: ([s, p]) => (toStr(s).startsWith(toStr(p)) ? toStr(s).slice(toStr(p).length) : s),
  trimsuffix: ([s, p]) => (toStr(s).endsWith(toStr(p)) ? toStr(s).slice(0, -toStr(p).length) : s),
  upper: ([s]) => toStr(s).toUpperCase(),
  values: ([o]) => Object.keys(o as object).sort().map((k) => (o as any)[k]),
};

// ---------------------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------------------

export interface ModuleLoader {
  /** The parsed module of a directory (all modules are loaded before evaluating). */
  get(dir: string): TfModule;
  /** Values of attributes that Terraform reads at plan time (data sources), by instance and address. */
  known?: (instance: Instance, address: { kind: "resource" | "data"; type: string; name: string }, attr: string) => unknown;
}

/** One module instance: its variables (given by the caller), locals, resources, child modules, outputs. */
export class Instance {
  readonly var: Record<string, unknown>;
  readonly local: Record<string, unknown>;
  readonly output: Record<string, unknown>;
  private readonly children = new Map<string, unknown>();
  private readonly resources = new Map<string, unknown>();
  private readonly evaluating = new Set<string>();

  constructor(
    readonly mod: TfModule,
    /** "" for the root, else "module.x[0]." (prefix of the addresses in this instance). */
    readonly address: string,
    args: Record<string, () => unknown>,
    readonly loader: ModuleLoader,
  ) {
    for (const name of Object.keys(args)) if (!(name in mod.variable)) throw new Error(`${address || "root"}: no variable ${name} in ${mod.dir}`);
    this.var = lazyObject(Object.keys(mod.variable), (name) => {
      if (name in args) return args[name]!();
      const v = mod.variable[name]!;
      if (!("default" in v)) throw new Error(`${address || "root"}: required variable ${name} not set`);
      return v.default;
    });
    this.local = lazyObject(Object.keys(mod.locals), (name) => this.guard(`local.${name}`, () => this.evalValue(mod.locals[name])));
    this.output = lazyObject(Object.keys(mod.output), (name) => this.guard(`output.${name}`, () => this.evalValue(mod.output[name]!.value)));
  }

  private guard<T>(what: string, f: () => T): T {
    if (this.evaluating.has(what)) throw new Error(`cycle at ${this.address}${what}`);
    this.evaluating.add(what);
    try {
      return f();
    } catch (err) {
      (err as Error).message += ` ← ${this.address}${what}`;
      throw err;
    } finally {
      this.evaluating.delete(what);
    }
  }

  /** Evaluates a value as hcl2json gives it (strings are templates; arrays and objects hold more values). */
  evalValue(v: unknown, scope: Record<string, unknown> = {}): unknown {
    if (typeof v === "string") return this.eval(parseTemplate(v), scope);
    if (Array.isArray(v)) return v.map((x) => this.evalValue(x, scope));
    if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.evalValue(x, scope)]));
    return v;
  }

  /** The instances of a resource, module call or data source block: key (undefined without count/for_each) and scope. */
  expand(body: Body, what: string): { key: string | number | undefined; scope: Record<string, unknown> }[] {
    if (body.count !== undefined && body.for_each !== undefined) throw new Error(`${what}: count and for_each`);
    if (body.count !== undefined) {
      const n = this.evalValue(body.count);
      if (typeof n !== "number" || !Number.isInteger(n) || n < 0) throw new Error(`${what}: count is ${JSON.stringify(n)}, not a known whole number`);
      return Array.from({ length: n }, (_, i) => ({ key: i, scope: { count: { index: i } } }));
    }
    if (body.for_each !== undefined) {
      const fe = this.evalValue(body.for_each);
      if (Array.isArray(fe)) {
        if (!isSet(fe)) throw new Error(`${what}: for_each needs a map or a set, not a list`);
        for (const k of fe) if (typeof k !== "string" || isUnknown(k)) throw new Error(`${what}: for_each key ${JSON.stringify(k)} is not a known string`);
        return (fe as string[]).map((k) => ({ key: k, scope: { each: { key: k, value: k } } }));
      }
      if (fe === null || typeof fe !== "object") throw new Error(`${what}: for_each is ${typeName(fe)}`);
      return Object.keys(fe)
        .sort()
        .map((k) => ({ key: k, scope: { each: { key: k, value: (fe as any)[k] } } }));
    }
    return [{ key: undefined, scope: {} }];
  }

  /** A child module call: its instances (a list with count, a map with for_each, else the one instance). */
  moduleInstances(name: string): { key: string | number | undefined; instance: Instance }[] {
    const body = this.mod.module[name];
    if (body === undefined) throw new Error(`no module ${name} in ${this.mod.dir}`);
    const dir = path.resolve(this.mod.dir, body.source as string);
    const callee = this.loader.get(dir);
    return this.expand(body, `module.${name}`).map(({ key, scope }) => {
      const args: Record<string, () => unknown> = {};
      for (const [k, v] of Object.entries(body)) {
        if (["source", "count", "for_each", "providers", "depends_on", "version"].includes(k)) continue;
        args[k] = () => this.guard(`module.${name}.${k}`, () => this.evalValue(v, scope));
      }
      const keyStr = key === undefined ? "" : typeof key === "number" ? `[${key}]` : `[${JSON.stringify(key)}]`;
      return { key, instance: new Instance(callee, `${this.address}module.${name}${keyStr}.`, args, this.loader) };
    });
  }

  private moduleValue(name: string): unknown {
    if (!this.children.has(name)) {
      const body = this.mod.module[name]!;
      const list = this.moduleInstances(name);
      const outputs = list.map((i) => i.instance.output);
      this.children.set(
        name,
        body.count !== undefined ? outputs : body.for_each !== undefined ? Object.fromEntries(list.map((i, j) => [String(i.key), outputs[j]])) : outputs[0],
      );
    }
    return this.children.get(name);
  }

  private resourceValue(kind: "resource" | "data", type: string, name: string): unknown {
    const id = `${kind}.${type}.${name}`;
    if (!this.resources.has(id)) {
      const body = this.mod[kind][type]?.[name];
      if (body === undefined) throw new Error(`no ${kind} ${type}.${name} in ${this.mod.dir}`);
      const base = `${this.address}${kind === "data" ? "data." : ""}${type}.${name}`;
      const list = this.expand(body, base);
      const known = (attr: string) => this.loader.known?.(this, { kind, type, name }, attr);
      const inst = (key: string | number | undefined) => resourceInstance(key === undefined ? base : `${base}[${JSON.stringify(key)}]`, known);
      this.resources.set(
        id,
        body.count !== undefined ? list.map((i) => inst(i.key)) : body.for_each !== undefined ? Object.fromEntries(list.map((i) => [String(i.key), inst(i.key)])) : inst(undefined),
      );
    }
    return this.resources.get(id);
  }

  private root(name: string, scope: Record<string, unknown>): unknown {
    if (name in scope) return scope[name];
    switch (name) {
      case "var":
        return this.var;
      case "local":
        return this.local;
      case "module":
        return lazyObject(Object.keys(this.mod.module), (n) => this.moduleValue(n));
      case "path":
        return { module: this.mod.dir, root: this.mod.dir, cwd: this.mod.dir };
      case "data":
        return lazyObject(Object.keys(this.mod.data), (t) => lazyObject(Object.keys(this.mod.data[t]!), (n) => this.resourceValue("data", t, n)));
      default:
        if (this.mod.resource[name] !== undefined) return lazyObject(Object.keys(this.mod.resource[name]!), (n) => this.resourceValue("resource", name, n));
        throw new Error(`unknown reference ${name} in ${this.mod.dir}`);
    }
  }

  eval(n: Node, scope: Record<string, unknown>): unknown {
    switch (n.k) {
      case "lit":
        return n.v;
      case "tmpl": {
        if (n.parts.length === 1 && typeof n.parts[0] !== "string") return this.eval(n.parts[0]!, scope); // "${x}" is x itself
        return n.parts.map((p) => (typeof p === "string" ? p : toStr(this.eval(p, scope)))).join("");
      }
      case "ref":
        return this.root(n.name, scope);
      case "attr": {
        const o = this.eval(n.obj, scope);
        if (o === null || typeof o !== "object" || Array.isArray(o)) throw new Error(`.${n.name} of a ${typeName(o)}`);
        const v = (o as any)[n.name];
        if (v === undefined) throw new Error(`no attribute ${n.name}`);
        return v;
      }
      case "index": {
        const o = this.eval(n.obj, scope);
        const k = this.eval(n.key, scope);
        if (Array.isArray(o)) {
          if (typeof k !== "number" || k < 0 || k >= o.length || isSet(o)) throw new Error(`index ${JSON.stringify(k)} of a list of ${o.length}`);
          return o[k];
        }
        if (o === null || typeof o !== "object") throw new Error(`index into a ${typeName(o)}`);
        const v = (o as any)[toStr(k)];
        if (v === undefined) throw new Error(`no key ${JSON.stringify(k)}`);
        return v;
      }
      case "splat": {
        let o = this.eval(n.obj, scope);
        if (o === null) return [];
        if (!Array.isArray(o)) o = [o];
        return (o as unknown[]).map((item) =>
          n.rest.reduce<unknown>((acc, op) => {
            if (op.k === "attr") return (acc as any)[op.name];
            return (acc as any)[toStr(this.eval(op.key, scope))];
          }, item),
        );
      }
      case "call": {
        if (n.name === "can" || n.name === "try") {
          for (const a of n.args) {
            try {
              const v = this.eval(a, scope);
              if (n.name === "can") return true;
              return v;
            } catch {
              if (n.name === "can") return false;
            }
          }
          throw new Error("try: no argument succeeded");
        }
        if (n.name === "templatefile") {
          const [file, vars] = n.args.map((a) => this.eval(a, scope)) as [string, Record<string, unknown>];
          return renderTemplateFile(file, vars);
        }
        if (n.name === "file") return readFileSync(toStr(this.eval(n.args[0]!, scope)), "utf8");
        const fn = FUNCTIONS[n.name];
        if (fn === undefined) throw new Error(`function ${n.name} is not implemented by test/terraform/hcl.ts`);
        const args = n.args.map((a) => this.eval(a, scope));
        if (n.expand) args.push(...(args.pop() as unknown[]));
        try {
          return fn(args);
        } catch (err) {
          throw new Error(`${n.name}(): ${(err as Error).message}`);
        }
      }
      case "tuple":
        return n.items.map((i) => this.eval(i, scope));
      case "object":
        return Object.fromEntries(n.items.map(([k, v]) => [toStr(this.eval(k, scope)), this.eval(v, scope)]));
      case "for": {
        const coll = this.eval(n.coll, scope);
        let pairs: [unknown, unknown][];
        if (Array.isArray(coll)) pairs = coll.map((v, i) => [isSet(coll) ? v : i, v]);
        else if (coll !== null && typeof coll === "object") pairs = Object.keys(coll).sort().map((k) => [k, (coll as any)[k]]);
        else throw new Error(`for over a ${typeName(coll)}`);
        const outList: unknown[] = [];
        const outObj: Record<string, unknown> = {};
        for (const [k, v] of pairs) {
          const s = { ...scope, [n.valVar]: v, ...(n.keyVar !== undefined ? { [n.keyVar]: k } : {}) };
          if (n.cond !== undefined) {
            const c = this.eval(n.cond, s);
            if (typeof c !== "boolean") throw new Error("for: the if condition is not a bool");
            if (!c) continue;
          }
          const val = this.eval(n.valExpr, s);
          if (!n.obj) outList.push(val);
          else {
            const key = toStr(this.eval(n.keyExpr!, s));
            if (n.group) ((outObj[key] ??= []) as unknown[]).push(val);
            else {
              if (key in outObj) throw new Error(`for: duplicate key ${key}`);
              outObj[key] = val;
            }
          }
        }
        return n.obj ? outObj : outList;
      }
      case "un": {
        const x = this.eval(n.x, scope);
        if (n.op === "!") {
          if (typeof x !== "boolean") throw new Error(`! of a ${typeName(x)}`);
          return !x;
        }
        if (typeof x !== "number") throw new Error(`- of a ${typeName(x)}`);
        return -x;
      }
      case "bin": {
        const l = this.eval(n.l, scope);
        const r = this.eval(n.r, scope);
        switch (n.op) {
          case "==":
            return deepEqual(l, r);
          case "!=":
            return !deepEqual(l, r);
          case "&&":
          case "||":
            if (typeof l !== "boolean" || typeof r !== "boolean") throw new Error(`${n.op} of ${typeName(l)} and ${typeName(r)}`);
            return n.op === "&&" ? l && r : l || r;
        }
        const [a, b] = [l, r].map((x) => (typeof x === "string" && x.trim() !== "" && !Number.isNaN(Number(x)) ? Number(x) : x));
        if (typeof a !== "number" || typeof b !== "number") throw new Error(`${n.op} of ${typeName(l)} and ${typeName(r)}`);
        switch (n.op) {
          case "<":
            return a < b;
          case ">":
            return a > b;
          case "<=":
            return a <= b;
          case ">=":
            return a >= b;
          case "+":
            return a + b;
          case "-":
            return a - b;
          case "*":
            return a * b;
          case "/":
            return a / b;
          case "%":
            return a % b;
        }
        throw new Error(`operator ${n.op}`);
      }
      case "cond": {
        const c = this.eval(n.c, scope);
        if (typeof c !== "boolean") throw new Error(`condition is a ${typeName(c)}, not a bool`);
        return this.eval(c ? n.t : n.f, scope);
      }
    }
  }

  /** The variable validations that fail (HCL evaluates the condition; an error counts as failing, as in Terraform). */
  failedValidations(): { variable: string; message: string }[] {
    const failed: { variable: string; message: string }[] = [];
    for (const [name, body] of Object.entries(this.mod.variable)) {
      for (const v of (body.validation ?? []) as Body[]) {
        let ok: unknown;
        try {
          ok = this.evalValue(v.condition);
        } catch (err) {
          ok = (err as Error).message;
        }
        if (ok !== true) failed.push({ variable: name, message: String(v.error_message) });
      }
    }
    return failed;
  }
}

/** templatefile(): the file is a template whose only names are the given variables. */
export function renderTemplateFile(file: string, vars: Record<string, unknown>): string {
  const scoped = new Instance(
    { dir: path.dirname(file), files: {}, resource: {}, data: {}, module: {}, variable: {}, output: {}, locals: {}, provider: {}, moved: [], terraform: [] },
    `templatefile(${path.basename(file)}).`,
    {},
    { get: () => { throw new Error("no modules in a template"); } },
  );
  const n = parseTemplate(readFileSync(file, "utf8"));
  const check = (node: Node): void => {
    // Only the template's variables are in scope (var., local., resources are not).
    if (node.k === "ref" && !(node.name in vars)) throw new Error(`${file}: ${node.name} is not a template variable`);
    const isNode = (x: unknown): x is Node => x !== null && typeof x === "object" && "k" in x;
    for (const child of Object.values(node)) {
      if (Array.isArray(child)) {
        for (const c of child) if (isNode(c)) check(c);
      } else if (isNode(child)) check(child);
    }
  };
  check(n);
  const out = scoped.eval(n, vars);
  return toStr(out);
}

/** Loads every module under `root` (the directories of .tf files) once, for Instance. */
export async function loadTree(root: string, dirs: string[]): Promise<ModuleLoader & { modules: Map<string, TfModule> }> {
  const modules = new Map<string, TfModule>();
  for (const d of dirs) modules.set(path.resolve(d), await loadModule(path.resolve(d)));
  return {
    modules,
    get(dir: string) {
      const m = modules.get(path.resolve(dir));
      if (m === undefined) throw new Error(`module ${dir} not loaded (under ${root})`);
      return m;
    },
  };
}

/** The root module instance of a configuration, with the given root variables (JS values). */
export function rootInstance(loader: ModuleLoader, dir: string, vars: Record<string, unknown>): Instance {
  return new Instance(loader.get(dir), "", Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, () => v])), loader);
}
