#!/usr/bin/env node
// The `fractal` command. The sources are TypeScript run through tsx, so a fresh clone needs no build
// step: `npm install` then `npx fractal --help`.
import { register } from "tsx/esm/api";

register();
await import("../cli/main.ts");
