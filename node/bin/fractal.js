#!/usr/bin/env node
// The `fractal` command. The sources are TypeScript run through tsx, so a fresh clone needs no build
// step: `npm install` then `npx fractal --help`.
import { register } from "tsx/esm/api";

// The AWS SDK warns on every start that future releases need Node 22; the version is pinned, so say it once in
// the README instead of in every node's log.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

register();
await import("../cli/main.ts");
