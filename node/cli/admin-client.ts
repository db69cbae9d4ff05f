/** HTTP client of the admin API for the CLI: one line errors, bearer admin token when given. */
export interface AdminTarget {
  readonly base: string;
  readonly adminToken: string | undefined;
}

export function adminTarget(node: string, adminToken: string | undefined): AdminTarget {
  if (!/^https?:\/\/[^/]+/.test(node)) throw new Error(`--node must be a URL like http://127.0.0.1:8080, not "${node}"`);
  return { base: node.replace(/\/+$/, ""), adminToken };
}

function headers(t: AdminTarget): Record<string, string> {
  return { "content-type": "application/json", ...(t.adminToken ? { authorization: `Bearer ${t.adminToken}` } : {}) };
}

export async function adminRequest(t: AdminTarget, method: "GET" | "POST", path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`${t.base}/api/admin${path}`, {
    method,
    headers: headers(t),
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  }).catch((err: unknown) => {
    throw new Error(`cannot reach ${t.base}: ${(err as Error).message}`);
  });
  if (!res.ok) {
    const e = (await res.json().catch(() => ({}))) as { error?: { code: string; message: string } };
    throw new Error(`${e.error?.code ?? res.status}: ${e.error?.message ?? res.statusText}`);
  }
  return res;
}

export async function adminJson<T>(t: AdminTarget, method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  return (await (await adminRequest(t, method, path, body)).json()) as T;
}

/** Reads an NDJSON response line by line. */
export async function* ndjson(res: Response): AsyncGenerator<unknown> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line !== "") yield JSON.parse(line);
    }
  }
  if (buffered.trim() !== "") yield JSON.parse(buffered);
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n") + "\n";
}
