/**
 * The Terraform deployment (terraform/): checked offline. The AWS provider cannot be downloaded here, so
 * `terraform validate` runs only where a local mirror of it exists (/opt/tf-plugins), and `plan` (which needs
 * AWS credentials for its data sources) never.
 *
 * - `terraform fmt -check -recursive terraform/`.
 * - Every .tf file parsed with @cdktf/hcl2json, asserting what matters for safety and consistency: the
 *   regions ↔ provider aliases ↔ module blocks, module arguments ↔ variables (a poor man's validate), the
 *   security groups (gRPC never open to the world, the client port only through the NLB, SSH only behind
 *   ssh_enabled), the bucket (versioning, SSE, public access block, no expiry of current objects), the IAM
 *   policy (only the given bucket), and the systemd unit's flags against the security groups / target group.
 * - The configuration EVALUATED offline (test/terraform/hcl.ts: module counts, arguments, locals, outputs,
 *   resource arguments, validations, templatefile, with apply-time values as markers) for both topologies and
 *   several region sets: with topology = "global" exactly one bucket exists, in the home region, and every
 *   region's nodes get it (module argument, IAM policy, --object-store, AWS_REGION) with --region = their AWS
 *   region; with "per-region" each region gets its own; gRPC stays closed to the world in both; the variable
 *   validations reject what they must.
 * - The user data rendered exactly as an instance gets it: by Terraform itself (the cloud-init module has no
 *   providers, so `terraform apply` evaluates it offline) and by a small TS substitution of the templates;
 *   both must agree. Its scripts pass `bash -n`, its unit `systemd-analyze verify` (when available).
 * - The unit's ExecStart run for real: two nodes started from it on 127.0.0.1 (binary → node/bin/fractal.js,
 *   S3 → a local directory, free ports, the node id / IP that fractal-instance-env would write), with the
 *   environment file the unit loads. The first seeds the cluster map, the second registers as joining, an
 *   admin rebalance with the token from the environment file activates it, and SIGTERM stops both with 0.
 * - With Terraform and the aws provider mirror: `terraform validate`, and `terraform console` agreeing with
 *   the evaluation above on the root's values.
 * - The global topology run for real: nodes of two regions started from their own regions' evaluated user
 *   data, on one object store directory (standing in for the shared bucket): the first seeds the one cluster
 *   map, the others (of both regions) join it with their regions, a rebalance activates them, rooms spread
 *   over both regions, and move-room pins a room to the other region.
 */
import { parse } from "@cdktf/hcl2json";
import { expect } from "chai";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Body, type Instance, type ModuleLoader, type TfModule, deepEqual, isUnknown, loadModule, loadTree, rootInstance } from "./hcl.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const TF_DIR = path.join(REPO, "terraform");
const REGION_DIR = path.join(TF_DIR, "modules/region");
const TEMPLATES = path.join(REGION_DIR, "templates");
const TERRAFORM = "/usr/local/bin/terraform";
const FRACTAL_CLI = path.join(REPO, "node/bin/fractal.js");
const TF_ENV = { ...process.env, TF_CLI_CONFIG_FILE: "/dev/null", TF_IN_AUTOMATION: "1", CHECKPOINT_DISABLE: "1" };
/** A filesystem mirror holding hashicorp/aws, when this machine has one (`terraform init` cannot download it). */
const AWS_PROVIDER_MIRROR = "/opt/tf-plugins";

// ---------------------------------------------------------------------------------------------------------
// HCL loading (test/terraform/hcl.ts parses and evaluates)
// ---------------------------------------------------------------------------------------------------------

function tfFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith(".")) continue;
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...tfFilesUnder(p));
    else if (entry.name.endsWith(".tf")) out.push(p);
  }
  return out;
}

const resources = (m: TfModule, type: string): [string, Body][] => Object.entries(m.resource[type] ?? {});

/** "${x}" → "x" (the expression of a pure interpolation), else undefined. */
function expr(value: unknown): string | undefined {
  if (typeof value !== "string") return undefined;
  const match = /^\$\{([\s\S]*)\}$/.exec(value);
  return match === null || match[1]!.includes("${") ? undefined : match[1]!.trim();
}

/** Resolves a value made of literals and `local.x` references of the module (numbers, strings, lists). */
function resolveLocal(m: TfModule, value: unknown, depth = 0): unknown {
  if (depth > 10) throw new Error(`local reference loop at ${String(value)}`);
  const e = expr(value);
  if (e !== undefined && /^local\.[a-z_0-9]+$/.test(e)) {
    const name = e.slice("local.".length);
    expect(m.locals, `local.${name} in ${m.dir}`).to.have.property(name);
    return resolveLocal(m, m.locals[name], depth + 1);
  }
  return value;
}

function variableDefault(m: TfModule, name: string): unknown {
  const v = m.variable[name];
  expect(v, `variable ${name} in ${m.dir}`).to.not.equal(undefined);
  return v!.default;
}

/**
 * The port range a security group rule covers (from_port..to_port resolved; -1 = every port; unresolvable =
 * NaN, which `covers` treats as every port). The NLB's listener rule takes its port from its for_each over
 * setproduct(var.client_cidrs, local.lb_ports): its range is that of local.lb_ports' possible values.
 */
function rulePorts(m: TfModule, rule: Body): [number, number] {
  if (rule.ip_protocol === "-1" || rule.protocol === "-1" || rule.protocol === "all") return [0, 65535];
  if (rule.from_port === "${each.value.port}" && rule.to_port === "${each.value.port}" && /^\$\{\{ for pair in setproduct\(var\.client_cidrs, local\.lb_ports\) :/.test(String(rule.for_each))) {
    expect(m.locals.lb_ports).to.equal("${var.certificate_arn == null ? [local.listener_port] : [local.listener_port, local.tls_port]}");
    const ports = [resolveLocal(m, "${local.listener_port}"), resolveLocal(m, "${local.tls_port}")] as number[];
    return [Math.min(...ports), Math.max(...ports)];
  }
  const from = resolveLocal(m, rule.from_port);
  const to = resolveLocal(m, rule.to_port);
  if (typeof from !== "number" || typeof to !== "number") return [Number.NaN, Number.NaN];
  return [from, to];
}

const covers = (ports: [number, number], port: number) => Number.isNaN(ports[0]) || (ports[0] <= port && port <= ports[1]);

// ---------------------------------------------------------------------------------------------------------
// Template rendering (the TS twin of Terraform's templatefile for these templates: ${name} and $${ escapes)
// ---------------------------------------------------------------------------------------------------------

function renderTemplate(file: string, vars: Record<string, string | number>): string {
  const src = readFileSync(path.join(TEMPLATES, file), "utf8");
  expect(src, `${file} uses no template directives`).to.not.match(/(^|[^%])%\{/);
  const used = new Set<string>();
  const out = src.replace(/\$(\$?)\{([^}]*)\}/g, (whole, escaped: string, name: string) => {
    if (escaped === "$") return `\${${name}}`;
    expect(name, `${file}: only plain \${variable} placeholders`).to.match(/^[a-z_][a-z0-9_]*$/);
    expect(vars, `${file} needs \${${name}}`).to.have.property(name);
    used.add(name);
    return String(vars[name]);
  });
  expect([...used].sort(), `${file}: every variable passed is used`).to.deep.equal(Object.keys(vars).sort());
  return out;
}

/** The ExecStart command line of a unit, continuation lines joined, as words. */
function execStart(unit: string): string[] {
  const joined = unit.replace(/\\\n/g, " ");
  const lines = joined.split("\n").filter((l) => l.startsWith("ExecStart="));
  expect(lines, "exactly one ExecStart").to.have.length(1);
  return lines[0]!.slice("ExecStart=".length).trim().split(/\s+/);
}

/** Flag → value of a `fractal node ...` argv (every flag takes a value). */
function flagsOf(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  const nodeAt = argv.indexOf("node");
  expect(nodeAt, "ExecStart runs `fractal node`").to.be.greaterThan(0);
  for (let i = nodeAt + 1; i < argv.length; i += 2) {
    expect(argv[i], `argument ${i} is a flag`).to.match(/^--[a-z-]+$/);
    expect(flags.has(argv[i]!), `${argv[i]} given once`).to.equal(false);
    flags.set(argv[i]!, argv[i + 1]!);
  }
  return flags;
}

/** systemd's ${VAR} expansion in ExecStart. */
function expandEnv(word: string, env: Record<string, string>): string {
  return word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_w, name: string) => {
    expect(env, `environment defines ${name}`).to.have.property(name);
    return env[name]!;
  });
}

/** KEY=VALUE lines of an EnvironmentFile (comments and blank lines skipped). */
function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.trim().startsWith("#")) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    expect(m, `environment line "${line}"`).to.not.equal(null);
    env[m![1]!] = m![2]!;
  }
  return env;
}

// ---------------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------------

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (ports.includes(port)) continue;
    const ok = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (ok) ports.push(port);
  }
  return ports;
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface Running {
  child: ChildProcess;
  log: () => string;
  exited: Promise<number | null>;
}

function start(argv: string[], env: NodeJS.ProcessEnv): Running {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  return { child, log: () => out.split("\n").slice(-30).join("\n"), exited };
}

function runCli(args: string[], env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [FRACTAL_CLI, ...args], { cwd: REPO, env, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ---------------------------------------------------------------------------------------------------------

const SUPPORTED = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"];
const alias = (region: string) => region.replace(/-/g, "_");
const terraformPresent = existsSync(TERRAFORM);
const MODULE_DIRS = ["", "modules/bucket", "modules/region", "modules/region/cloud-init", "modules/peering"].map((d) => path.join(TF_DIR, d));

/** The required root variables (what a .tfvars or TF_VAR_ must give), for evaluations. */
const REQUIRED = { fractal_source: "https://github.com/example-org/fractal-chat.git", fractal_version: "v0.1.0", admin_token: "test-admin-token-0123456789abcdefghij" };

/** What `terraform plan` would read from data sources that matter for the evaluation: the region's AZs. */
const knownAtPlan: NonNullable<ModuleLoader["known"]> = (instance, address, attr) =>
  address.type === "aws_availability_zones" && attr === "names" ? ["a", "b", "c"].map((z) => `${instance.var.region as string}${z}`) : undefined;

interface Deployed {
  root: Instance;
  /** Bucket module block name => its instances. */
  buckets: Record<string, Instance[]>;
  /** Deployed region => its region module instance. */
  regions: Record<string, Instance>;
}

/** The root module evaluated with these variables: which bucket and region module instances exist. */
function evaluate(tree: ModuleLoader, vars: Record<string, unknown>): Deployed {
  const root = rootInstance(tree, TF_DIR, { ...REQUIRED, ...vars });
  expect(root.failedValidations(), `validations of ${JSON.stringify(vars)}`).to.deep.equal([]);
  const buckets: Record<string, Instance[]> = {};
  const regions: Record<string, Instance> = {};
  for (const name of Object.keys(root.mod.module)) {
    const instances = root.moduleInstances(name).map((i) => i.instance);
    if (name.startsWith("bucket_")) buckets[name] = instances;
    if (name.startsWith("region_")) {
      expect(instances.length, `${name} instances`).to.be.at.most(1);
      for (const i of instances) regions[i.var.region as string] = i;
    }
  }
  return { root, buckets, regions };
}

/** A region module instance's user data, as cloud-init gets it: files by path, and the unit's `fractal node` flags. */
function userDataOf(region: Instance): { files: Record<string, { content: string; permissions: string; owner: string }>; runcmd: string[][]; unit: string; env: Record<string, string>; flags: Map<string, string> } {
  const [cloudInit] = region.moduleInstances("cloud_init");
  const text = cloudInit!.instance.output.user_data as string;
  expect(text.startsWith("#cloud-config\n")).to.equal(true);
  const ud = JSON.parse(text.slice("#cloud-config\n".length)) as { write_files: { path: string; content: string; permissions: string; owner: string }[]; runcmd: string[][] };
  const files = Object.fromEntries(ud.write_files.map((f) => [f.path, f]));
  const unit = files["/etc/systemd/system/fractal.service"]!.content;
  return { files, runcmd: ud.runcmd, unit, env: parseEnvFile(files["/etc/fractal/fractal.env"]!.content), flags: flagsOf(execStart(unit)) };
}

describe("terraform deployment", function () {
  this.timeout(120_000);

  let root: TfModule;
  let bucket: TfModule;
  let region: TfModule;
  let cloudInit: TfModule;
  let peering: TfModule;
  let example: TfModule;
  let tree: ModuleLoader;

  before(async () => {
    root = await loadModule(TF_DIR);
    bucket = await loadModule(path.join(TF_DIR, "modules/bucket"));
    region = await loadModule(REGION_DIR);
    cloudInit = await loadModule(path.join(REGION_DIR, "cloud-init"));
    peering = await loadModule(path.join(TF_DIR, "modules/peering"));
    example = await loadModule(path.join(TF_DIR, "examples/two-regions"));
    tree = { ...(await loadTree(TF_DIR, MODULE_DIRS)), known: knownAtPlan };
  });

  it("is formatted: terraform fmt -check -recursive terraform/", function () {
    if (!terraformPresent) this.skip(); // no terraform binary at /usr/local/bin/terraform: fmt cannot be checked
    const r = spawnSync(TERRAFORM, ["fmt", "-check", "-recursive", "-diff", "terraform/"], { cwd: REPO, env: TF_ENV, encoding: "utf8" });
    expect(r.status, `terraform fmt wants changes:\n${r.stdout}${r.stderr}`).to.equal(0);
  });

  it("parses every .tf file with hcl2json and has the standard module shape", async () => {
    const files = tfFilesUnder(TF_DIR);
    for (const f of files) await parse(path.basename(f), readFileSync(f, "utf8"));
    for (const f of ["main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"]) expect(existsSync(path.join(TF_DIR, f)), f).to.equal(true);
    const versions = root.terraform.find((t) => t.required_providers !== undefined)!;
    expect(versions.required_version, "validations that refer to other variables need 1.9").to.match(/^>= 1\.(9|1[0-9])/);
    expect(versions.required_providers[0].aws.source).to.equal("hashicorp/aws");
    expect(versions.required_providers[0].aws.version).to.match(/^~> 5\./);
    for (const name of ["topology", "regions", "home_region", "nodes_per_region", "instance_type", "fractal_source", "fractal_version", "ssh_enabled", "ssh_cidr", "admin_token", "lease_ttl", "checkpoint_interval", "project", "tags", "vpc_cidr_base"]) {
      expect(root.variable, `root variable ${name}`).to.have.property(name);
    }
    expect(variableDefault(root, "nodes_per_region")).to.equal(3);
    expect(variableDefault(root, "ssh_enabled")).to.equal(false);
    expect(root.variable.admin_token!.sensitive).to.equal(true);
    expect(root.variable.admin_token!.default, "the admin token has no default").to.equal(undefined);
    expect(variableDefault(root, "topology"), "the fractal shape is the default").to.equal("global");
    expect(variableDefault(root, "home_region")).to.equal(null);
    for (const name of ["client_urls", "bucket_names", "buckets", "home_region", "topology", "object_stores", "rebalance_commands"]) expect(root.output, `root output ${name}`).to.have.property(name);
  });

  it("gives every region of the default and example `regions` a region module with its own provider", () => {
    const validation = (root.variable.regions!.validation as Body[]).map((v) => String(v.condition)).join(" ");
    const validated = JSON.parse(/contains\((\[[^\]]*\])/.exec(validation)![1]!) as string[];
    expect(validated, "variable regions validates against the supported set").to.deep.equal(SUPPORTED);
    expect(root.locals.supported_regions).to.deep.equal(SUPPORTED);

    const providers = root.provider.aws!;
    const exampleModule = Object.values(example.module).find((m) => m.source === "../..")!;
    const tfvars = readFileSync(path.join(TF_DIR, "examples/two-regions/two-regions.tfvars"), "utf8");
    const wanted = new Set<string>([
      ...(variableDefault(root, "regions") as string[]),
      ...(exampleModule.regions as string[]),
      ...(/regions\s*=\s*(\[[^\]]*\])/.exec(tfvars) ? (JSON.parse(/regions\s*=\s*(\[[^\]]*\])/.exec(tfvars)![1]!) as string[]) : []),
    ]);
    expect(wanted.size).to.be.greaterThanOrEqual(2);
    for (const r of SUPPORTED) {
      const provider = providers.find((p) => p.alias === alias(r));
      expect(provider, `provider aws.${alias(r)}`).to.not.equal(undefined);
      expect(provider!.region).to.equal(r);
      const mod = root.module[`region_${alias(r)}`];
      expect(mod, `module region_${alias(r)}`).to.not.equal(undefined);
      expect(mod!.source).to.equal("./modules/region");
      expect(mod!.region).to.equal(r);
      expect(mod!.count).to.equal(`\${contains(var.regions, "${r}") ? 1 : 0}`);
      expect(mod!.providers).to.deep.equal({ aws: `\${aws.${alias(r)}}` });
      expect(mod!.vpc_cidr).to.equal(`\${local.vpc_cidrs["${r}"]}`);
      expect(mod!.peer_cidrs).to.equal(`\${local.peer_cidrs["${r}"]}`);
      const b = root.module[`bucket_${alias(r)}`];
      expect(b, `module bucket_${alias(r)}`).to.not.equal(undefined);
      expect(b!.source).to.equal("./modules/bucket");
      expect(b!.region).to.equal(r);
      expect(b!.providers, "a region's bucket is created with that region's provider").to.deep.equal({ aws: `\${aws.${alias(r)}}` });
    }
    expect(Object.keys(root.module).filter((k) => k.startsWith("bucket_")).sort()).to.deep.equal(SUPPORTED.map((r) => `bucket_${alias(r)}`).sort());
    for (const r of wanted) expect(SUPPORTED, `${r} (default/example) is supported`).to.include(r);
    // Every other argument is passed identically to every region.
    for (const kind of ["region", "bucket"]) {
      const common = (m: Body) => Object.fromEntries(Object.entries(m).filter(([k]) => !["count", "providers", "region", "vpc_cidr", "peer_cidrs", "certificate_arn", "bucket"].includes(k)));
      const first = common(root.module[`${kind}_${alias(SUPPORTED[0]!)}`]!);
      for (const r of SUPPORTED) expect(common(root.module[`${kind}_${alias(r)}`]!), `${kind}_${alias(r)} arguments`).to.deep.equal(first);
    }
    // The outputs and the bucket map cover every module block.
    for (const r of SUPPORTED) expect(root.files["outputs.tf"]).to.include(`module.region_${alias(r)}`);
    for (const r of SUPPORTED) expect(String(root.locals.buckets)).to.include(`module.bucket_${alias(r)}`);
  });

  it("peers every pair of supported regions with the two regions' providers", () => {
    for (let i = 0; i < SUPPORTED.length; i++) {
      for (const b of SUPPORTED.slice(i + 1)) {
        const a = SUPPORTED[i]!;
        const mod = root.module[`peering_${alias(a)}__${alias(b)}`];
        expect(mod, `peering ${a} ${b}`).to.not.equal(undefined);
        expect(mod!.source).to.equal("./modules/peering");
        expect(mod!.count).to.equal(`\${local.peered["${a}|${b}"] ? 1 : 0}`);
        expect(mod!.providers).to.deep.equal({ "aws.requester": `\${aws.${alias(a)}}`, "aws.accepter": `\${aws.${alias(b)}}` });
        expect(mod!.requester).to.equal(`\${module.region_${alias(a)}[0].peering}`);
        expect(mod!.accepter).to.equal(`\${module.region_${alias(b)}[0].peering}`);
      }
    }
    expect(Object.keys(root.module).filter((k) => k.startsWith("peering_"))).to.have.length((SUPPORTED.length * (SUPPORTED.length - 1)) / 2);
    // Both directions routed, and the accepter accepts.
    expect(peering.resource.aws_vpc_peering_connection_accepter!.this!.auto_accept).to.equal(true);
    expect(Object.keys(peering.resource.aws_route!)).to.have.members(["requester_to_accepter", "accepter_to_requester"]);
  });

  it("passes every module exactly the variables it declares (a validate that needs no provider)", () => {
    const check = (caller: TfModule, name: string, callee: TfModule) => {
      const call = caller.module[name]!;
      const args = Object.keys(call).filter((k) => !["source", "count", "for_each", "providers", "depends_on"].includes(k));
      for (const a of args) expect(callee.variable, `${name}: argument ${a} is a variable of ${callee.dir}`).to.have.property(a);
      for (const [v, body] of Object.entries(callee.variable)) {
        if (!("default" in body)) expect(args, `${name}: required variable ${v} of ${callee.dir} is passed`).to.include(v);
      }
    };
    for (const name of Object.keys(root.module)) check(root, name, name.startsWith("region_") ? region : name.startsWith("bucket_") ? bucket : peering);
    check(region, "cloud_init", cloudInit);
    check(example, "fractal", root);
    // var.x, local.x, module.x references resolve within each module.
    for (const m of [root, bucket, region, cloudInit, peering, example]) {
      const text = Object.values(m.files).join("\n").replace(/#.*$/gm, "");
      for (const [, v] of text.matchAll(/\bvar\.([a-z_0-9]+)/g)) expect(m.variable, `var.${v} in ${m.dir}`).to.have.property(v!);
      for (const [, l] of text.matchAll(/\blocal\.([a-z_0-9]+)/g)) expect(m.locals, `local.${l} in ${m.dir}`).to.have.property(l!);
      for (const [, mod] of text.matchAll(/\bmodule\.([a-z_0-9]+)/g)) expect(m.module, `module.${mod} in ${m.dir}`).to.have.property(mod!);
      for (const [, type, name] of text.matchAll(/(?<![.\w])(aws_[a-z0-9_]+)\.([a-z_0-9]+)\b/g)) {
        expect(m.resource[type!]?.[name!], `resource ${type}.${name} in ${m.dir}`).to.not.equal(undefined);
      }
      for (const [, type, name] of text.matchAll(/\bdata\.(aws_[a-z0-9_]+)\.([a-z_0-9]+)\b/g)) {
        expect(m.data[type!]?.[name!], `data ${type}.${name} in ${m.dir}`).to.not.equal(undefined);
      }
    }
  });

  describe("security groups", () => {
    const httpPort = () => resolveLocal(region, "${local.http_port}") as number;
    const grpcPort = () => resolveLocal(region, "${local.grpc_port}") as number;

    it("has every rule as a separate aws_vpc_security_group_*_rule (so the checks below see them all)", () => {
      for (const m of [root, bucket, region, peering]) {
        expect(m.resource.aws_security_group_rule, `aws_security_group_rule in ${m.dir}`).to.equal(undefined);
        for (const [name, sg] of resources(m, "aws_security_group")) {
          expect(sg.ingress, `inline ingress in aws_security_group.${name}`).to.equal(undefined);
          expect(sg.egress, `inline egress in aws_security_group.${name}`).to.equal(undefined);
        }
      }
      expect(Object.keys(region.resource.aws_security_group!)).to.have.members(["lb", "node"]);
      expect(httpPort()).to.equal(8080);
      expect(grpcPort()).to.equal(9080);
    });

    it("never opens gRPC to 0.0.0.0/0: only the node group itself and the peer regions' VPC CIDRs", () => {
      const grpc = resources(region, "aws_vpc_security_group_ingress_rule").filter(([, r]) => covers(rulePorts(region, r), grpcPort()));
      expect(grpc.map(([n]) => n)).to.have.members(["node_grpc_self", "node_grpc_peers"]);
      for (const [name, r] of grpc) {
        expect(r.security_group_id, name).to.equal("${aws_security_group.node.id}");
        expect(r.ip_protocol, name).to.equal("tcp");
        expect(rulePorts(region, r), name).to.deep.equal([grpcPort(), grpcPort()]);
        expect(r.cidr_ipv4, name).to.not.equal("0.0.0.0/0");
        expect(r.cidr_ipv6, name).to.equal(undefined);
        expect(r.prefix_list_id, name).to.equal(undefined);
        if (name === "node_grpc_self") expect(r.referenced_security_group_id).to.equal("${aws_security_group.node.id}");
        else {
          expect(r.for_each).to.equal("${toset(var.peer_cidrs)}");
          expect(r.cidr_ipv4).to.equal("${each.value}");
        }
      }
      // peer_cidrs are the other deployed regions' VPCs, never a wildcard.
      expect(region.variable.peer_cidrs!.default).to.deep.equal([]);
      expect(String(root.locals.peer_cidrs)).to.match(/local\.vpc_cidrs\[o\] if o != r/);
    });

    it("opens the client port only through the NLB: nodes take 8080 from the NLB's group, the NLB takes client_cidrs on 80/443", () => {
      const ingress = resources(region, "aws_vpc_security_group_ingress_rule");
      // No ingress rule is open to the world except the NLB's listener rule (whose CIDRs are var.client_cidrs).
      for (const [name, r] of ingress) {
        expect(r.ip_protocol, `${name} protocol`).to.equal("tcp");
        expect(r.cidr_ipv4, name).to.not.equal("0.0.0.0/0");
        expect(r.cidr_ipv6, name).to.equal(undefined);
      }
      const http = ingress.filter(([, r]) => covers(rulePorts(region, r), httpPort()));
      expect(http.map(([n]) => n)).to.deep.equal(["node_http_from_lb"]);
      expect(http[0]![1]).to.include({ security_group_id: "${aws_security_group.node.id}", referenced_security_group_id: "${aws_security_group.lb.id}" });
      expect(http[0]![1].cidr_ipv4).to.equal(undefined);

      const clients = ingress.filter(([, r]) => r.security_group_id === "${aws_security_group.lb.id}");
      expect(clients.map(([n]) => n)).to.deep.equal(["lb_clients"]);
      const lbClients = clients[0]![1];
      expect(lbClients.cidr_ipv4).to.equal("${each.value.cidr}");
      expect(lbClients.from_port).to.equal("${each.value.port}");
      expect(lbClients.to_port).to.equal("${each.value.port}");
      expect(lbClients.for_each).to.include("setproduct(var.client_cidrs, local.lb_ports)");
      expect(String(region.locals.lb_ports)).to.equal("${var.certificate_arn == null ? [local.listener_port] : [local.listener_port, local.tls_port]}");
      expect([resolveLocal(region, "${local.listener_port}"), resolveLocal(region, "${local.tls_port}")]).to.deep.equal([80, 443]);
      // The NLB uses that group, forwards to the nodes' HTTP port, and may only send there.
      const lb = region.resource.aws_lb!.this!;
      expect(lb.load_balancer_type).to.equal("network");
      expect(lb.security_groups).to.deep.equal(["${aws_security_group.lb.id}"]);
      const lbEgress = resources(region, "aws_vpc_security_group_egress_rule").filter(([, r]) => r.security_group_id === "${aws_security_group.lb.id}");
      expect(lbEgress.map(([n]) => n)).to.deep.equal(["lb_to_nodes"]);
      expect(lbEgress[0]![1].referenced_security_group_id).to.equal("${aws_security_group.node.id}");
      expect(rulePorts(region, lbEgress[0]![1])).to.deep.equal([httpPort(), httpPort()]);
      // The nodes live in private subnets (no public IPs).
      const instance = region.resource.aws_instance!.node!;
      expect(instance.subnet_id).to.equal("${aws_subnet.private[each.value.az].id}");
      expect(region.resource.aws_subnet!.private!.map_public_ip_on_launch).to.not.equal(true);
      expect(region.resource.aws_launch_template!.node!.network_interfaces).to.equal(undefined);
    });

    it("has SSH only behind ssh_enabled, never from 0.0.0.0/0", () => {
      const ssh = resources(region, "aws_vpc_security_group_ingress_rule").filter(([, r]) => covers(rulePorts(region, r), 22));
      expect(ssh.map(([n]) => n)).to.deep.equal(["node_ssh"]);
      const rule = ssh[0]![1];
      expect(rule.count).to.equal("${var.ssh_enabled ? 1 : 0}");
      expect(rule.cidr_ipv4).to.equal("${var.ssh_cidr}");
      expect(JSON.stringify(rule.lifecycle)).to.include('var.ssh_cidr != \\"0.0.0.0/0\\"');
      expect(variableDefault(region, "ssh_enabled")).to.equal(false);
      expect(variableDefault(root, "ssh_cidr")).to.equal(null);
      expect(String((root.variable.ssh_cidr!.validation as Body[])[0]!.condition)).to.include('var.ssh_cidr != "0.0.0.0/0"');
      expect(region.resource.aws_launch_template!.node!.key_name).to.equal("${var.ssh_enabled ? var.ssh_key_name : null}");
    });
  });

  describe("object store bucket and IAM", () => {
    it("creates buckets only in modules/bucket (one bucket per instance of it)", () => {
      for (const m of [root, region, cloudInit, peering]) {
        expect(Object.keys(m.resource).filter((t) => t.startsWith("aws_s3_bucket")), `bucket resources in ${m.dir}`).to.deep.equal([]);
      }
      expect(Object.keys(bucket.resource.aws_s3_bucket!)).to.deep.equal(["objects"]);
      expect(bucket.resource.aws_s3_bucket!.objects!.count ?? bucket.resource.aws_s3_bucket!.objects!.for_each, "one bucket per module instance").to.equal(undefined);
      // Every bucket setting is a separate resource of the same bucket.
      for (const [type, byName] of Object.entries(bucket.resource)) {
        if (type === "aws_s3_bucket") continue;
        for (const [name, r] of Object.entries(byName)) expect(r.bucket, `${type}.${name}`).to.equal("${aws_s3_bucket.objects.id}");
      }
      expect(Object.keys(bucket.resource).sort()).to.deep.equal(
        [
          "aws_s3_bucket",
          "aws_s3_bucket_lifecycle_configuration",
          "aws_s3_bucket_ownership_controls",
          "aws_s3_bucket_policy",
          "aws_s3_bucket_public_access_block",
          "aws_s3_bucket_server_side_encryption_configuration",
          "aws_s3_bucket_versioning",
        ].sort(),
      );
    });

    it("moves the buckets that modules/region used to create into modules/bucket (per-region deployments keep them)", () => {
      const moves = root.moved.map((m) => [expr(m.from), expr(m.to)]);
      const wanted = SUPPORTED.flatMap((r) =>
        Object.keys(bucket.resource).map((type) => [`module.region_${alias(r)}[0].${type}.objects`, `module.bucket_${alias(r)}[0].${type}.objects`]),
      );
      expect(moves).to.have.deep.members(wanted);
      expect(moves).to.have.length(wanted.length);
    });

    it("owner-enforces the bucket, allows only TLS, and names it after the project and region", () => {
      expect(bucket.resource.aws_s3_bucket_ownership_controls!.objects!.rule[0].object_ownership).to.equal("BucketOwnerEnforced");
      const policy = bucket.resource.aws_s3_bucket_policy!.objects!;
      expect(policy.policy).to.equal("${data.aws_iam_policy_document.tls_only.json}");
      const deny = (bucket.data.aws_iam_policy_document!.tls_only!.statement as Body[])[0]!;
      expect(deny).to.deep.include({ effect: "Deny", actions: ["s3:*"], resources: ["${aws_s3_bucket.objects.arn}", "${aws_s3_bucket.objects.arn}/*"] });
      expect(deny.condition[0]).to.deep.include({ test: "Bool", variable: "aws:SecureTransport", values: ["false"] });
      expect(bucket.resource.aws_s3_bucket!.objects!.bucket_prefix).to.equal("${local.name}-");
      expect(bucket.locals.name).to.equal("${var.project}-${var.region}");
      expect(bucket.resource.aws_s3_bucket!.objects!.force_destroy).to.equal("${var.force_destroy}");
    });

    it("versions, encrypts and blocks public access to the bucket", () => {
      const bucketRef = "${aws_s3_bucket.objects.id}";
      const versioning = bucket.resource.aws_s3_bucket_versioning!.objects!;
      expect(versioning.bucket).to.equal(bucketRef);
      expect(versioning.versioning_configuration[0].status).to.equal("Enabled");
      const sse = bucket.resource.aws_s3_bucket_server_side_encryption_configuration!.objects!;
      expect(sse.bucket).to.equal(bucketRef);
      expect(["AES256", "aws:kms", "aws:kms:dsse"]).to.include(sse.rule[0].apply_server_side_encryption_by_default[0].sse_algorithm);
      const pab = bucket.resource.aws_s3_bucket_public_access_block!.objects!;
      expect(pab).to.deep.include({ bucket: bucketRef, block_public_acls: true, block_public_policy: true, ignore_public_acls: true, restrict_public_buckets: true });
    });

    it("expires only noncurrent versions (segments are referenced by manifests)", () => {
      const lifecycle = bucket.resource.aws_s3_bucket_lifecycle_configuration!.objects!;
      expect(lifecycle.bucket).to.equal("${aws_s3_bucket.objects.id}");
      for (const rule of lifecycle.rule as Body[]) {
        expect(rule.noncurrent_version_expiration, "noncurrent versions expire").to.not.equal(undefined);
        for (const e of (rule.expiration ?? []) as Body[]) {
          expect(e.days, "no expiry of current objects by age").to.equal(undefined);
          expect(e.date, "no expiry of current objects by date").to.equal(undefined);
          expect(e.expired_object_delete_marker).to.equal(true);
        }
        expect(rule.transition, "no transitions").to.equal(undefined);
        expect(JSON.stringify(rule.filter ?? []), "the rule is not aimed at segments/").to.not.include("segments");
      }
      expect(JSON.stringify(bucket.resource)).to.not.match(/"days":\s*\d/);
      expect(lifecycle.rule[0].noncurrent_version_expiration[0].noncurrent_days).to.equal("${var.noncurrent_version_days}");
    });

    it("lets the nodes' role touch only the bucket it is given and its objects, with the object store's actions", () => {
      const doc = region.data.aws_iam_policy_document!.objects!;
      const allowedResources = ["${var.bucket.arn}", "${var.bucket.arn}/*"];
      const allowedActions = ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"];
      const actions = new Set<string>();
      for (const s of doc.statement as Body[]) {
        expect(s.effect ?? "Allow").to.equal("Allow");
        expect(s.not_actions ?? s.not_resources, "no Not* elements").to.equal(undefined);
        for (const r of s.resources as string[]) {
          expect(allowedResources, `resource ${r}`).to.include(r);
          expect(r).to.not.equal("*");
        }
        for (const a of s.actions as string[]) {
          expect(allowedActions, `action ${a}`).to.include(a);
          actions.add(a);
          // Bucket-level actions on the bucket ARN, object actions on its objects.
          expect(s.resources, a).to.deep.equal(a === "s3:ListBucket" ? [allowedResources[0]] : [allowedResources[1]]);
        }
      }
      for (const a of ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"]) expect([...actions]).to.include(a);
      // The role's only inline policy is that document; the only attachment is SSM's, behind ssm_enabled.
      expect(Object.keys(region.resource.aws_iam_role_policy!)).to.deep.equal(["objects"]);
      expect(region.resource.aws_iam_role_policy!.objects!.policy).to.equal("${data.aws_iam_policy_document.objects.json}");
      expect(region.resource.aws_iam_policy, "no managed policies of our own").to.equal(undefined);
      const attachments = resources(region, "aws_iam_role_policy_attachment");
      expect(attachments.map(([n]) => n)).to.deep.equal(["ssm"]);
      expect(attachments[0]![1]).to.include({ count: "${var.ssm_enabled ? 1 : 0}", policy_arn: "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" });
      expect(region.resource.aws_launch_template!.node!.iam_instance_profile[0].arn).to.equal("${aws_iam_instance_profile.node.arn}");
      expect(region.resource.aws_iam_instance_profile!.node!.role).to.equal("${aws_iam_role.node.name}");
    });
  });

  describe("topology: one cluster across the regions (global, the default) or one per region", () => {
    type BucketOut = { name: string; arn: string; region: string };
    const GRPC = 9080;

    /** Every bucket module instance of a deployment, with its bucket. */
    const bucketsOf = (d: Deployed) => Object.values(d.buckets).flat().map((i) => ({ region: i.var.region as string, bucket: i.output.bucket as BucketOut }));

    /** The IAM policy of a region's nodes: [actions, resources] per statement, evaluated. */
    const policyOf = (r: Instance) =>
      (r.mod.data.aws_iam_policy_document!.objects!.statement as Body[]).map((st) => ({ actions: r.evalValue(st.actions) as string[], resources: r.evalValue(st.resources) as string[] }));

    /** Every gRPC ingress / egress rule instance of a region's node security group, evaluated. */
    function grpcRules(r: Instance): { name: string; dir: "ingress" | "egress"; cidr: unknown; sg: unknown }[] {
      const out: { name: string; dir: "ingress" | "egress"; cidr: unknown; sg: unknown }[] = [];
      for (const dir of ["ingress", "egress"] as const) {
        for (const [name, body] of Object.entries(r.mod.resource[`aws_vpc_security_group_${dir}_rule`] ?? {})) {
          for (const { scope } of r.expand(body, name)) {
            const protocol = r.evalValue(body.ip_protocol, scope);
            const from = r.evalValue(body.from_port ?? 0, scope) as number;
            const to = r.evalValue(body.to_port ?? 65535, scope) as number;
            if (protocol !== "-1" && (from > GRPC || to < GRPC)) continue;
            expect(body.cidr_ipv6, `${name}: no IPv6 rule`).to.equal(undefined);
            expect(body.prefix_list_id, `${name}: no prefix list`).to.equal(undefined);
            out.push({ name, dir, cidr: body.cidr_ipv4 === undefined ? undefined : r.evalValue(body.cidr_ipv4, scope), sg: body.referenced_security_group_id });
          }
        }
      }
      return out;
    }

    /** What every deployment must satisfy, whatever the topology. */
    function commonChecks(d: Deployed, regions: string[]) {
      expect(Object.keys(d.regions).sort(), "deployed regions").to.deep.equal([...regions].sort());
      const vpcCidrs = d.root.local.vpc_cidrs as Record<string, string>;
      for (const [r, inst] of Object.entries(d.regions)) {
        const others = regions.filter((o) => o !== r).map((o) => vpcCidrs[o]!);
        // gRPC: only the node group itself and the other deployed regions' VPCs (over the peering), never the world.
        const rules = grpcRules(inst);
        for (const rule of rules) {
          expect(rule.cidr, `${r} ${rule.name}`).to.not.equal("0.0.0.0/0");
          if (rule.cidr === undefined) expect(rule.sg, `${r} ${rule.name}`).to.equal("${aws_security_group.node.id}");
          else expect(others, `${r} ${rule.name}: ${String(rule.cidr)} is another region's VPC`).to.include(rule.cidr);
        }
        for (const dir of ["ingress", "egress"] as const) {
          const cidrs = rules.filter((x) => x.dir === dir && x.cidr !== undefined).map((x) => x.cidr);
          expect(cidrs, `${r} gRPC ${dir}: every other region's VPC`).to.have.members(others);
        }
        // The nodes: stable ids <region>-n<i>, tagged so the instance learns its id.
        const body = inst.mod.resource.aws_instance!.node!;
        const nodes = inst.expand(body, "aws_instance.node");
        expect(nodes.map((n) => n.key)).to.deep.equal(Array.from({ length: 3 }, (_, i) => `${r}-n${i + 1}`).sort());
        for (const n of nodes) expect((inst.evalValue(body.tags, n.scope) as Record<string, string>).FractalNodeId).to.equal(n.key);
      }
      // Every pair of deployed regions is peered, no other pair.
      for (const name of Object.keys(d.root.mod.module).filter((k) => k.startsWith("peering_"))) {
        const [a, b] = name.slice("peering_".length).split("__").map((x) => SUPPORTED.find((r) => alias(r) === x)!);
        expect(d.root.moduleInstances(name).length, name).to.equal(regions.includes(a!) && regions.includes(b!) ? 1 : 0);
      }
    }

    const GLOBAL: { name: string; vars: Record<string, unknown>; regions: string[]; home: string }[] = [
      { name: "the defaults", vars: {}, regions: ["us-east-1", "eu-west-1"], home: "us-east-1" },
      { name: "three regions, home eu-west-1", vars: { regions: ["us-east-1", "eu-west-1", "ap-southeast-1"], home_region: "eu-west-1" }, regions: ["us-east-1", "eu-west-1", "ap-southeast-1"], home: "eu-west-1" },
      { name: "every supported region, home ap-southeast-1", vars: { regions: SUPPORTED, home_region: "ap-southeast-1" }, regions: SUPPORTED, home: "ap-southeast-1" },
      { name: "one region", vars: { regions: ["us-west-2"] }, regions: ["us-west-2"], home: "us-west-2" },
    ];

    for (const c of GLOBAL) {
      it(`global, ${c.name}: one bucket, in ${c.home}, that every region's nodes use with --region = their AWS region`, () => {
        const d = evaluate(tree, { topology: "global", ...c.vars });
        commonChecks(d, c.regions);
        const buckets = bucketsOf(d);
        expect(buckets.map((b) => b.region), "exactly one bucket, in the home region").to.deep.equal([c.home]);
        const shared = buckets[0]!.bucket;
        expect(shared.region).to.equal(c.home);
        expect(isUnknown(shared.name) && isUnknown(shared.arn), "name and ARN come from the bucket resource").to.equal(true);
        expect(d.root.output.topology).to.equal("global");
        expect(d.root.output.home_region).to.equal(c.home);
        expect(d.root.output.buckets, "the one shared bucket").to.deep.equal({ [c.home]: shared.name });
        for (const [r, inst] of Object.entries(d.regions)) {
          expect(inst.var.bucket, `${r} gets the shared bucket`).to.deep.equal(shared);
          // The IAM policy names that bucket and its objects, nothing else.
          const policy = policyOf(inst);
          expect(policy.flatMap((st) => st.resources).sort()).to.deep.equal([shared.arn, `${shared.arn}/*`].sort());
          for (const st of policy) expect(st.resources).to.deep.equal(st.actions.includes("s3:ListBucket") ? [shared.arn] : [`${shared.arn}/*`]);
          // The node: its own region on the ring of regions, the shared object store, the bucket's region for S3.
          const ud = userDataOf(inst);
          expect(ud.flags.get("--region"), `${r} --region`).to.equal(r);
          expect(ud.flags.get("--object-store"), `${r} --object-store`).to.equal(`s3://${shared.name}/fractal`);
          expect(ud.env.AWS_REGION, `${r} AWS_REGION (the bucket's region)`).to.equal(c.home);
          expect(ud.flags.get("--lease-ttl"), "a longer lease when renewals cross regions").to.equal("10s");
          expect(ud.flags.get("--peers"), "discovery through the shared map, no addresses written by hand").to.equal(`\${FRACTAL_INSTANCE_NODE_ID}=\${FRACTAL_INSTANCE_PRIVATE_IP}:${GRPC}`);
          expect(ud.unit).to.match(new RegExp(`^Description=Fractal Chat node \\(region ${r}\\)$`, "m"));
        }
        for (const out of ["bucket_names", "object_stores"]) {
          const values = Object.values(d.root.output[out] as Record<string, string>);
          expect(values, out).to.have.length(c.regions.length);
          expect(new Set(values).size, `${out}: the same for every region`).to.equal(1);
        }
        expect(Object.keys(d.root.output.rebalance_commands as object), "one rebalance for the one cluster").to.deep.equal([c.home]);
        expect(Object.keys(d.root.output.client_urls as object).sort()).to.deep.equal([...c.regions].sort());
      });
    }

    for (const regions of [["us-east-1", "eu-west-1"], ["us-west-2", "eu-west-1", "ap-southeast-1"]]) {
      it(`per-region, ${regions.join(" + ")}: each region its own bucket, map and 5s lease`, () => {
        const d = evaluate(tree, { topology: "per-region", regions });
        commonChecks(d, regions);
        const buckets = bucketsOf(d);
        expect(buckets.map((b) => b.region).sort()).to.deep.equal([...regions].sort());
        expect(d.root.output.home_region).to.equal(null);
        expect(Object.keys(d.root.output.buckets as object).sort()).to.deep.equal([...regions].sort());
        const stores = new Set<string>();
        for (const [r, inst] of Object.entries(d.regions)) {
          const own = buckets.find((b) => b.region === r)!.bucket;
          expect(inst.var.bucket, `${r} gets its own bucket`).to.deep.equal(own);
          expect(policyOf(inst).flatMap((st) => st.resources).sort()).to.deep.equal([own.arn, `${own.arn}/*`].sort());
          const ud = userDataOf(inst);
          expect(ud.flags.get("--region")).to.equal(r);
          expect(ud.flags.get("--object-store")).to.equal(`s3://${own.name}/fractal`);
          expect(ud.env.AWS_REGION).to.equal(r);
          expect(ud.flags.get("--lease-ttl")).to.equal("5s");
          stores.add(ud.flags.get("--object-store")!);
        }
        expect(stores.size, "one object store per region").to.equal(regions.length);
        expect(Object.keys(d.root.output.rebalance_commands as object).sort()).to.deep.equal([...regions].sort());
      });
    }

    it("deploys the global topology from the example module call and .tfvars, and an explicit lease_ttl wins", async () => {
      const exampleTree: ModuleLoader = { ...(await loadTree(TF_DIR, [...MODULE_DIRS, path.join(TF_DIR, "examples/two-regions")])), known: knownAtPlan };
      const ex = rootInstance(exampleTree, path.join(TF_DIR, "examples/two-regions"), { admin_token: REQUIRED.admin_token });
      expect(ex.failedValidations()).to.deep.equal([]);
      const fractal = ex.moduleInstances("fractal")[0]!.instance;
      expect(fractal.failedValidations()).to.deep.equal([]);
      expect(fractal.output.topology).to.equal("global");
      expect(fractal.output.home_region).to.equal("us-east-1");
      expect(Object.keys(fractal.output.buckets as object)).to.deep.equal(["us-east-1"]);
      const tfvars = (await parse("two-regions.tfvars", readFileSync(path.join(TF_DIR, "examples/two-regions/two-regions.tfvars"), "utf8"))) as Record<string, unknown>;
      const d = evaluate(tree, tfvars);
      expect(bucketsOf(d).map((b) => b.region)).to.deep.equal(["us-east-1"]);
      for (const inst of Object.values(d.regions)) expect(userDataOf(inst).flags.get("--lease-ttl")).to.equal(tfvars.lease_ttl);
      expect(userDataOf(evaluate(tree, { lease_ttl: "15s" }).regions["eu-west-1"]!).flags.get("--lease-ttl")).to.equal("15s");
    });

    it("validates the variables: topology, home_region among regions, peering for a global cluster, durations", () => {
      const failing = (vars: Record<string, unknown>) => [...new Set(rootInstance(tree, TF_DIR, { ...REQUIRED, ...vars }).failedValidations().map((f) => f.variable))].sort();
      expect(failing({})).to.deep.equal([]);
      expect(failing({ topology: "regional" })).to.deep.equal(["topology"]);
      expect(failing({ topology: "per-region" })).to.deep.equal([]);
      expect(failing({ home_region: "us-west-2" }), "home_region must be deployed").to.deep.equal(["home_region"]);
      expect(failing({ home_region: "eu-central-1" })).to.deep.equal(["home_region"]);
      expect(failing({ home_region: "eu-west-1" })).to.deep.equal([]);
      expect(failing({ regions: ["us-west-2", "ap-southeast-1"], home_region: "ap-southeast-1" })).to.deep.equal([]);
      expect(failing({ cross_region_peering: false }), "a global cluster over several regions needs the peering").to.deep.equal(["cross_region_peering"]);
      expect(failing({ cross_region_peering: false, topology: "per-region" })).to.deep.equal([]);
      expect(failing({ cross_region_peering: false, regions: ["eu-west-1"] })).to.deep.equal([]);
      expect(failing({ lease_ttl: "ten seconds" })).to.deep.equal(["lease_ttl"]);
      expect(failing({ lease_ttl: "2500ms" })).to.deep.equal([]);
      expect(failing({ regions: ["us-east-1", "us-east-1"] })).to.deep.equal(["regions"]);
      expect(failing({ regions: ["eu-central-1"] })).to.deep.equal(["regions"]);
      expect(failing({ regions: [] })).to.deep.equal(["home_region", "regions"]);
    });

    it("agrees with `terraform console` on what it evaluates, and passes `terraform validate` (with the local aws provider mirror)", function () {
      this.timeout(480_000); // eight terraform runs, several seconds each
      if (!terraformPresent || !existsSync(AWS_PROVIDER_MIRROR)) this.skip(); // needs terraform and /opt/tf-plugins (the aws provider, offline)
      const dir = mkdtempSync(path.join(os.tmpdir(), "fractal-tfv-"));
      try {
        const copy = path.join(dir, "terraform");
        spawnSync("cp", ["-r", TF_DIR, copy]);
        const rc = path.join(dir, "terraformrc");
        writeFileSync(rc, `provider_installation {\n  filesystem_mirror {\n    path    = "${AWS_PROVIDER_MIRROR}"\n    include = ["registry.terraform.io/hashicorp/aws"]\n  }\n  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n`);
        const env = { ...TF_ENV, TF_CLI_CONFIG_FILE: rc };
        const tf = (cwd: string, args: string[], input?: string) => spawnSync(TERRAFORM, args, { cwd, env, encoding: "utf8", timeout: 180_000, input });
        for (const cwd of [copy, path.join(copy, "examples/two-regions")]) {
          for (const args of [["init", "-backend=false", "-input=false", "-no-color"], ["validate", "-no-color"]]) {
            const r = tf(cwd, args);
            expect(r.status, `terraform ${args[0]} in ${path.relative(dir, cwd)}:\n${r.stdout}${r.stderr}`).to.equal(0);
          }
        }
        // The same root values, from Terraform and from hcl2json + test/terraform/hcl.ts.
        const probe = `jsonencode({ counts = { for n, m in { ${SUPPORTED.map((r) => `bucket_${alias(r)} = module.bucket_${alias(r)}, region_${alias(r)} = module.region_${alias(r)}`).join(", ")} } : n => length(m) }, bucket_regions = { for r, b in local.region_buckets : r => b == null ? null : b.region }, lease_ttl = local.lease_ttl, home_region = local.home_region, peer_cidrs = local.peer_cidrs, bucket_keys = keys(local.buckets), peered = local.peered })`;
        const cases: Record<string, unknown>[] = [{}, { regions: ["us-east-1", "eu-west-1", "ap-southeast-1"], home_region: "eu-west-1" }, { topology: "per-region", regions: ["us-west-2", "ap-southeast-1"], lease_ttl: "7s" }];
        for (const vars of cases) {
          const all = { ...REQUIRED, ...vars };
          const args = ["console", "-no-color", ...Object.entries(all).flatMap(([k, v]) => ["-var", `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`])];
          const r = tf(copy, args, `${probe}\n`);
          expect(r.status, `terraform console ${JSON.stringify(vars)}:\n${r.stdout}${r.stderr}`).to.equal(0);
          const fromTerraform = JSON.parse(JSON.parse(r.stdout.trim()) as string) as unknown;
          const d = evaluate(tree, vars);
          const local = d.root.local;
          const ours = {
            counts: Object.fromEntries(SUPPORTED.flatMap((x) => [`bucket_${alias(x)}`, `region_${alias(x)}`]).map((n) => [n, d.root.moduleInstances(n).length])),
            bucket_regions: Object.fromEntries(Object.entries(local.region_buckets as Record<string, BucketOut | null>).map(([k, b]) => [k, b === null ? null : b.region])),
            lease_ttl: local.lease_ttl,
            home_region: local.home_region,
            peer_cidrs: local.peer_cidrs,
            bucket_keys: Object.keys(local.buckets as object).sort(),
            peered: local.peered,
          };
          expect(deepEqual(ours, fromTerraform), `evaluation of ${JSON.stringify(vars)}:\nterraform: ${JSON.stringify(fromTerraform)}\nours:      ${JSON.stringify(ours)}`).to.equal(true);
        }
        // Terraform's own validation rejects a home region that is not deployed (console reports it and goes on).
        const bad = tf(copy, ["console", "-no-color", ...Object.entries({ ...REQUIRED, home_region: "us-west-2" }).flatMap(([k, v]) => ["-var", `${k}=${v}`])], "1\n");
        expect(bad.stderr).to.include("Invalid value for variable");
        expect(bad.stderr.replace(/\s+/g, " ")).to.include("home_region must be one of regions");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("runs for real: nodes of two regions, started from their regions' user data, form ONE cluster map through the shared store", async function () {
      this.timeout(180_000);
      const d = evaluate(tree, {}); // the defaults: global, us-east-1 (home) + eu-west-1
      const ud = { "us-east-1": userDataOf(d.regions["us-east-1"]!), "eu-west-1": userDataOf(d.regions["eu-west-1"]!) };
      const store = ud["us-east-1"].flags.get("--object-store")!;
      expect(store).to.match(/^s3:\/\//);
      expect(ud["eu-west-1"].flags.get("--object-store"), "both regions' units name the same object store").to.equal(store);
      expect(ud["eu-west-1"].env.AWS_REGION).to.equal("us-east-1");
      expect(ud["eu-west-1"].env.FRACTAL_ADMIN_TOKEN).to.equal(REQUIRED.admin_token);

      const work = mkdtempSync(path.join(os.tmpdir(), "fractal-global-"));
      const objects = path.join(work, "objects"); // stands in for the shared bucket
      mkdirSync(objects);
      const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FRACTAL_") && !k.startsWith("AWS_")));
      const adminEnv = { ...cleanEnv, FRACTAL_ADMIN_TOKEN: REQUIRED.admin_token };
      const admin = (url: string, args: string[]) => {
        const r = runCli(["admin", ...args, "--json", "--node", url], adminEnv);
        expect(r.status, `fractal admin ${args.join(" ")}:\n${r.stdout}${r.stderr}`).to.equal(0);
        return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
      };
      const running: Running[] = [];
      try {
        // us-east-1-n1 first (it seeds the map), then two nodes of the other region.
        const nodes: { id: string; region: "us-east-1" | "eu-west-1"; url?: string }[] = [
          { id: "us-east-1-n1", region: "us-east-1" },
          { id: "eu-west-1-n1", region: "eu-west-1" },
          { id: "eu-west-1-n2", region: "eu-west-1" },
        ];
        const ports = await freePorts(nodes.length * 2);
        for (const [i, n] of nodes.entries()) {
          const [http, grpc] = [ports[2 * i]!, ports[2 * i + 1]!];
          const instanceEnv = { FRACTAL_INSTANCE_NODE_ID: n.id, FRACTAL_INSTANCE_PRIVATE_IP: "127.0.0.1" };
          const flags = flagsOf(execStart(ud[n.region].unit).map((w) => expandEnv(w, instanceEnv)));
          expect(flags.get("--region")).to.equal(n.region);
          expect(flags.get("--peers"), "only itself: no other node's address").to.equal(`${n.id}=127.0.0.1:${GRPC}`);
          // Loopback instead of the instance's interfaces and ports; a directory instead of the bucket.
          flags.set("--host", "127.0.0.1");
          flags.set("--http-port", String(http));
          flags.set("--grpc-port", String(grpc));
          flags.set("--peers", `${n.id}=127.0.0.1:${grpc}`);
          flags.set("--data-dir", path.join(work, n.id));
          flags.set("--object-store", objects);
          const node = start([process.execPath, FRACTAL_CLI, "node", ...[...flags].flat()], { ...cleanEnv, ...ud[n.region].env });
          running.push(node);
          n.url = `http://127.0.0.1:${http}`;
          await waitFor(`${n.id} /readyz`, 60_000, async () => {
            if (node.child.exitCode !== null) throw new Error(`${n.id} exited ${node.child.exitCode}:\n${node.log()}`);
            return (await fetch(`${n.url}/readyz`)).status === 200 ? true : undefined;
          }).catch((err: Error) => {
            throw new Error(`${err.message}\n${node.log()}`);
          });
        }
        const [us, eu1, eu2] = nodes.map((n) => n.url!) as [string, string, string];
        const members = (url: string) => {
          const s = admin(url, ["status"])[0]! as { nodes: { node: string; state: string; region?: string }[] };
          return Object.fromEntries(s.nodes.map((n) => [n.node, n.state]));
        };
        expect(members(eu2), "one map: the first node seeded it, the other region's nodes joined it").to.deep.equal({ "us-east-1-n1": "active", "eu-west-1-n1": "joining", "eu-west-1-n2": "joining" });
        admin(eu1, ["rebalance"]);
        await waitFor("every node active", 20_000, async () => (Object.values(members(us)).every((st) => st === "active") ? true : undefined));

        // The map (from any node) lists every node with its region; a session from one region works in the other.
        const session = (await (await fetch(`${us}/api/session`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "tester" }) })).json()) as { token: string };
        const auth = { authorization: `Bearer ${session.token}` };
        const cluster = (await (await fetch(`${eu2}/api/cluster`, { headers: auth })).json()) as { nodes: { id: string; region: string; state: string }[] };
        expect(Object.fromEntries(cluster.nodes.map((n) => [n.id, n.region]))).to.deep.equal({ "us-east-1-n1": "us-east-1", "eu-west-1-n1": "eu-west-1", "eu-west-1-n2": "eu-west-1" });

        // Rooms spread over the ring of regions, each owned by a node of its home region.
        const homes = new Map<string, string>();
        for (let i = 0; i < 16; i++) {
          const room = `global-${i}`;
          const info = (await (await fetch(`${[us, eu1, eu2][i % 3]}/api/rooms/${room}`, { headers: auth })).json()) as { owner: string; region: string };
          expect(info.owner.startsWith(`${info.region}-`), `${room}: owner ${info.owner} is in its home region ${info.region}`).to.equal(true);
          homes.set(room, info.region);
        }
        expect([...new Set(homes.values())].sort(), "both regions are home to rooms").to.deep.equal(["eu-west-1", "us-east-1"]);

        // A room homed in us-east-1: written through an eu-west-1 node, then pinned to eu-west-1; its seqs go on.
        const room = [...homes].find(([, r]) => r === "us-east-1")![0];
        const post = async (url: string, id: string) => {
          const res = await fetch(`${url}/api/rooms/${room}/messages`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ text: id, id }) });
          expect(res.status, await res.clone().text()).to.equal(200);
          return ((await res.json()) as { seq: number }).seq;
        };
        expect(await post(eu1, "before-move")).to.equal(1);
        admin(us, ["move-room", room, "--region", "eu-west-1"]);
        const after = admin(eu2, ["room", room])[0]! as { region: string; owner: string; pinned: boolean; seq: number };
        expect(after).to.include({ region: "eu-west-1", pinned: true, seq: 1 });
        expect(after.owner).to.match(/^eu-west-1-n[12]$/);
        expect(await post(us, "after-move")).to.equal(2);

        for (const node of running.reverse()) {
          node.child.kill("SIGTERM");
          const code = await Promise.race([node.exited, new Promise<string>((r) => setTimeout(() => r("timeout"), 30_000))]);
          expect(code, `graceful stop:\n${node.log()}`).to.equal(0);
        }
      } finally {
        for (const node of running) if (node.child.exitCode === null) node.child.kill("SIGKILL");
        rmSync(work, { recursive: true, force: true });
      }
    });
  });

  describe("the node's systemd unit", () => {
    const bucket = "fractal-chat-us-east-1-20240101000000000000000001";
    const adminToken = "test-admin-token-0123456789abcdefghij";
    let vars: Record<string, string | number>;
    let unit: string;
    let envFile: string;
    let userData: { write_files: { path: string; permissions: string; owner: string; content: string }[]; runcmd: string[][] } | undefined;

    before(() => {
      // The cloud-init module call of the region module, with the module's locals resolved.
      const call = region.module.cloud_init!;
      expect(call.source).to.equal("./cloud-init");
      expect(call).to.include({ http_port: "${local.http_port}", grpc_port: "${local.grpc_port}", object_store: "${local.object_store}", data_dir: "${local.data_dir}" });
      expect(call).to.include({ lease_ttl: "${var.lease_ttl}", checkpoint_interval: "${var.checkpoint_interval}", admin_token: "${var.admin_token}", region: "${var.region}", bucket_region: "${var.bucket.region}" });
      expect(region.locals.object_store).to.equal("s3://${var.bucket.name}/${var.object_prefix}");
      vars = {
        fractal_bin: "/usr/bin/node /opt/fractal/app/node/bin/fractal.js",
        region: "us-east-1",
        http_port: resolveLocal(region, call.http_port) as number,
        grpc_port: resolveLocal(region, call.grpc_port) as number,
        data_dir: resolveLocal(region, call.data_dir) as string,
        object_store: `s3://${bucket}/${variableDefault(region, "object_prefix") as string}`,
        lease_ttl: evaluate(tree, {}).root.local.lease_ttl as string,
        checkpoint_interval: variableDefault(root, "checkpoint_interval") as string,
        log_level: variableDefault(cloudInit, "log_level") as string,
        stop_timeout_seconds: variableDefault(cloudInit, "stop_timeout_seconds") as number,
      };
      expect(cloudInit.locals.fractal_bin).to.equal("/usr/bin/node ${local.app_dir}/node/bin/fractal.js");
      expect(cloudInit.locals.app_dir).to.equal("/opt/fractal/app");
      unit = renderTemplate("fractal.service.tftpl", vars);
      envFile = renderTemplate("fractal.env.tftpl", { bucket_region: "us-east-1", admin_token: adminToken });
    });

    it("starts `fractal node` with flags matching the security groups, the target group and the bucket", () => {
      const argv = execStart(unit);
      expect(argv.slice(0, 2)).to.deep.equal(["/usr/bin/node", "/opt/fractal/app/node/bin/fractal.js"]);
      const flags = flagsOf(argv);
      const httpPort = resolveLocal(region, "${local.http_port}");
      const grpcPort = resolveLocal(region, "${local.grpc_port}");
      expect(flags.get("--http-port")).to.equal(String(httpPort));
      expect(flags.get("--grpc-port")).to.equal(String(grpcPort));
      const tg = region.resource.aws_lb_target_group!.http!;
      expect(resolveLocal(region, tg.port)).to.equal(httpPort);
      expect(tg.protocol).to.equal("TCP");
      expect(tg.health_check[0]).to.include({ protocol: "HTTP", path: "/readyz", port: "traffic-port", matcher: "200" });
      expect(resolveLocal(region, region.resource.aws_lb_target_group_attachment!.node!.port)).to.equal(httpPort);
      expect(flags.get("--object-store")).to.equal(`s3://${bucket}/fractal`);
      expect(flags.get("--data-dir")).to.equal("/var/lib/fractal");
      expect(unit).to.match(/^StateDirectory=fractal$/m); // systemd creates /var/lib/fractal for User=fractal
      expect(unit).to.match(/^ReadWritePaths=\/var\/lib\/fractal$/m);
      expect(flags.get("--host")).to.equal("0.0.0.0");
      expect(flags.get("--advertise-host")).to.equal("${FRACTAL_INSTANCE_PRIVATE_IP}");
      expect(flags.get("--id")).to.equal("${FRACTAL_INSTANCE_NODE_ID}");
      expect(flags.get("--peers"), "discovery: the node seeds or registers itself").to.equal(`\${FRACTAL_INSTANCE_NODE_ID}=\${FRACTAL_INSTANCE_PRIVATE_IP}:${grpcPort}`);
      expect(flags.get("--region")).to.equal("us-east-1");
      expect(flags.get("--lease-ttl"), "global topology (the default): a longer lease").to.equal("10s");
      expect(flags.get("--checkpoint-interval")).to.equal("1s");
      // The admin token stays out of argv (world-readable); the node reads FRACTAL_ADMIN_TOKEN from the root-only env file.
      expect(flags.has("--admin-token")).to.equal(false);
      expect(unit).to.not.include(adminToken);
      expect(parseEnvFile(envFile)).to.deep.include({ FRACTAL_ADMIN_TOKEN: adminToken, AWS_REGION: "us-east-1" });
      expect(unit).to.match(/^EnvironmentFile=\/etc\/fractal\/fractal\.env$/m);
      expect(unit).to.match(/^EnvironmentFile=\/etc\/fractal\/instance\.env$/m);
      expect(unit).to.match(/^KillSignal=SIGTERM$/m);
      // The instance-env script writes the two variables the unit expands, from the instance metadata.
      const instanceEnv = readFileSync(path.join(TEMPLATES, "fractal-instance-env.sh"), "utf8");
      expect(instanceEnv).to.include("FRACTAL_INSTANCE_NODE_ID=%s\\nFRACTAL_INSTANCE_PRIVATE_IP=%s");
      expect(instanceEnv).to.include('"$imds/meta-data/$1"');
      expect(instanceEnv).to.include("id=$(md tags/instance/FractalNodeId");
      expect(instanceEnv).to.include("ip=$(md local-ipv4)");
      // ... and the instances carry that tag, with tags readable from the metadata (IMDSv2 only).
      expect(region.resource.aws_instance!.node!.tags).to.include("FractalNodeId = each.key");
      expect(region.resource.aws_launch_template!.node!.metadata_options[0]).to.include({ http_tokens: "required", instance_metadata_tags: "enabled" });
      expect(region.resource.aws_launch_template!.node!.user_data).to.equal("${base64encode(module.cloud_init.user_data)}");
      // The evaluated configuration (default variables, us-east-1) renders the same unit and environment
      // file, with the shared bucket's name where this test put a literal one.
      const deployed = evaluate(tree, { admin_token: adminToken });
      const ud = userDataOf(deployed.regions["us-east-1"]!);
      const bucketName = deployed.root.local.region_buckets as Record<string, { name: string }>;
      expect(isUnknown(bucketName["us-east-1"]!.name)).to.equal(true);
      expect(ud.unit.split(bucketName["us-east-1"]!.name).join(bucket)).to.equal(unit);
      expect(ud.files["/etc/fractal/fractal.env"]!.content).to.equal(envFile);
    });

    it("renders the same user data with Terraform itself; its scripts and unit are valid", function () {
      if (!terraformPresent) this.skip(); // no terraform binary: the TS rendering above is all we have
      const dir = mkdtempSync(path.join(os.tmpdir(), "fractal-tf-"));
      try {
        const source = path.relative(dir, path.join(REGION_DIR, "cloud-init"));
        writeFileSync(
          path.join(dir, "main.tf"),
          `module "ci" {
  source              = "${source}"
  region              = "${vars.region}"
  bucket_region       = "${vars.region}"
  object_store        = "${vars.object_store}"
  http_port           = ${vars.http_port}
  grpc_port           = ${vars.grpc_port}
  data_dir            = "${vars.data_dir}"
  lease_ttl           = "${vars.lease_ttl}"
  checkpoint_interval = "${vars.checkpoint_interval}"
  admin_token         = "${adminToken}"
  fractal_source      = "https://github.com/example-org/fractal-chat.git"
  fractal_version     = "v0.1.0"
}
output "user_data" {
  value     = module.ci.user_data
  sensitive = true
}
`,
        );
        for (const args of [["init", "-backend=false", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]]) {
          const r = spawnSync(TERRAFORM, args, { cwd: dir, env: TF_ENV, encoding: "utf8", timeout: 60_000 });
          expect(r.status, `terraform ${args[0]}:\n${r.stdout}${r.stderr}`).to.equal(0);
        }
        const out = spawnSync(TERRAFORM, ["output", "-json"], { cwd: dir, env: TF_ENV, encoding: "utf8" });
        const text = (JSON.parse(out.stdout) as { user_data: { value: string } }).user_data.value;
        expect(text.startsWith("#cloud-config\n")).to.equal(true);
        userData = JSON.parse(text.slice("#cloud-config\n".length)) as typeof userData;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      const files = Object.fromEntries(userData!.write_files.map((f) => [f.path, f]));
      expect(files["/etc/systemd/system/fractal.service"]!.content, "Terraform and the TS rendering agree").to.equal(unit);
      expect(files["/etc/fractal/fractal.env"]).to.include({ content: envFile, permissions: "0600", owner: "root:root" });
      expect(userData!.runcmd).to.deep.equal([
        ["/usr/local/sbin/fractal-instance-env"],
        ["/usr/local/sbin/fractal-install"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "fractal.service"],
      ]);
      const scratch = mkdtempSync(path.join(os.tmpdir(), "fractal-ud-"));
      try {
        for (const f of ["/usr/local/sbin/fractal-instance-env", "/usr/local/sbin/fractal-install", "/usr/local/sbin/fractal-admin"]) {
          expect(files[f], f).to.not.equal(undefined);
          expect(files[f]!.permissions).to.equal("0755");
          expect(files[f]!.content.startsWith("#!/bin/bash\n"), f).to.equal(true);
          const script = path.join(scratch, path.basename(f));
          writeFileSync(script, files[f]!.content);
          const r = spawnSync("bash", ["-n", script], { encoding: "utf8" });
          expect(r.status, `bash -n ${f}: ${r.stderr}`).to.equal(0);
        }
        expect(files["/usr/local/sbin/fractal-install"]!.content).to.include("https://deb.nodesource.com/node_20.x");
        expect(files["/usr/local/sbin/fractal-install"]!.content).to.include("src='https://github.com/example-org/fractal-chat.git'");
        expect(files["/usr/local/sbin/fractal-admin"]!.content).to.include(`--node http://127.0.0.1:${vars.http_port}`);
        if (existsSync("/usr/bin/systemd-analyze")) {
          // Structural check of the unit (unknown keys, bad values); this machine may lack the instance's
          // /usr/bin/node and fractal user, so only those complaints are tolerated.
          const unitPath = path.join(scratch, "fractal.service");
          writeFileSync(unitPath, unit);
          const r = spawnSync("/usr/bin/systemd-analyze", ["verify", "--man=no", unitPath], { encoding: "utf8", timeout: 30_000 });
          const problems = `${r.stdout}${r.stderr}`
            .split("\n")
            .filter((l) => l.trim() !== "" && !/Command \/usr\/bin\/node is not executable|Failed to resolve (user|group) fractal|System has not been booted with systemd/i.test(l));
          expect(problems, `systemd-analyze verify:\n${r.stdout}${r.stderr}`).to.deep.equal([]);
        }
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    });

    it("runs for real: the first node seeds the cluster map, the next joins, rebalance activates it, SIGTERM exits 0", async function () {
      this.timeout(120_000);
      const work = mkdtempSync(path.join(os.tmpdir(), "fractal-unit-"));
      const objects = path.join(work, "objects");
      mkdirSync(objects);
      const running: Running[] = [];
      const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FRACTAL_") && !k.startsWith("AWS_")));
      const fileEnv = parseEnvFile(envFile);
      const nodeEnv: NodeJS.ProcessEnv = { ...cleanEnv, ...fileEnv };
      try {
        const ids = ["us-east-1-n1", "us-east-1-n2"];
        const ports = await freePorts(ids.length * 2);
        const urls: string[] = [];
        for (const [i, id] of ids.entries()) {
          const [http, grpc] = [ports[2 * i]!, ports[2 * i + 1]!];
          // What fractal-instance-env writes on an instance.
          const instanceEnv = { FRACTAL_INSTANCE_NODE_ID: id, FRACTAL_INSTANCE_PRIVATE_IP: "127.0.0.1" };
          const argv = execStart(unit).map((w) => expandEnv(w, instanceEnv));
          const flags = flagsOf(argv);
          flags.set("--host", "127.0.0.1");
          flags.set("--http-port", String(http));
          flags.set("--grpc-port", String(grpc));
          expect(flags.get("--peers")).to.equal(`${id}=127.0.0.1:${vars.grpc_port}`);
          flags.set("--peers", `${id}=127.0.0.1:${grpc}`);
          flags.set("--data-dir", path.join(work, id));
          expect(flags.get("--object-store")).to.match(/^s3:\/\//);
          flags.set("--object-store", objects);
          const cmd = [process.execPath, FRACTAL_CLI, "node", ...[...flags].flat()];
          const node = start(cmd, nodeEnv);
          running.push(node);
          const url = `http://127.0.0.1:${http}`;
          urls.push(url);
          await waitFor(`${id} /readyz`, 60_000, async () => {
            if (node.child.exitCode !== null) throw new Error(`${id} exited ${node.child.exitCode}:\n${node.log()}`);
            const res = await fetch(`${url}/readyz`);
            return res.status === 200 ? true : undefined;
          }).catch((err: Error) => {
            throw new Error(`${err.message}\n${node.log()}`);
          });
        }
        // The admin API wants the token of the environment file (the nodes got it only from there).
        const adminEnv = { ...cleanEnv };
        const denied = runCli(["admin", "status", "--json", "--node", urls[0]!], adminEnv);
        expect(denied.status, "admin without the token is refused").to.not.equal(0);
        const status = () => {
          const r = runCli(["admin", "status", "--json", "--node", urls[1]!], { ...adminEnv, FRACTAL_ADMIN_TOKEN: fileEnv.FRACTAL_ADMIN_TOKEN });
          expect(r.status, r.stderr).to.equal(0);
          const s = JSON.parse(r.stdout.trim().split("\n")[0]!) as { nodes: { node: string; state: string }[] };
          return Object.fromEntries(s.nodes.map((n) => [n.node, n.state]));
        };
        expect(status(), "first node seeded the map, the second registered").to.deep.equal({ [ids[0]!]: "active", [ids[1]!]: "joining" });
        const rebalance = runCli(["admin", "rebalance", "--json", "--node", urls[0]!], { ...adminEnv, FRACTAL_ADMIN_TOKEN: fileEnv.FRACTAL_ADMIN_TOKEN });
        expect(rebalance.status, `${rebalance.stdout}${rebalance.stderr}`).to.equal(0);
        await waitFor("both nodes active", 10_000, async () => {
          const s = status();
          return s[ids[0]!] === "active" && s[ids[1]!] === "active" ? true : undefined;
        });
        // systemd's stop: one SIGTERM, then wait.
        for (const node of running.reverse()) {
          node.child.kill("SIGTERM");
          const code = await Promise.race([node.exited, new Promise<string>((r) => setTimeout(() => r("timeout"), 30_000))]);
          expect(code, `graceful stop:\n${node.log()}`).to.equal(0);
        }
        expect(statSync(path.join(objects, "cluster")).isDirectory()).to.equal(true);
      } finally {
        for (const node of running) if (node.child.exitCode === null) node.child.kill("SIGKILL");
        rmSync(work, { recursive: true, force: true });
      }
    });
  });
});
