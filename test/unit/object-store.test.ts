import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DirectoryObjectStore } from "../../shards/index.js";
import { objectStoreContract } from "./object-store.contract.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

objectStoreContract("local directory", async () => {
  const dir = mkdtempSync(join(tmpdir(), "fractal-objects-"));
  dirs.push(dir);
  return new DirectoryObjectStore(dir);
});
