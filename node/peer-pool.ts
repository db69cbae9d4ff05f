/** One PeerLink per peer node, created on first use from the cluster map and replaced if its address moves. */
import { FractalError } from "../shards/index.js";
import type { Logger } from "./log.js";
import type { Membership } from "./membership.js";
import { PeerLink } from "./rpc/peer-link.js";

export class PeerPool {
  private readonly links = new Map<string, PeerLink>();

  constructor(
    private readonly membership: Membership,
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {}

  get(node: string): PeerLink {
    const descriptor = this.membership.node(node);
    if (descriptor === undefined) throw new FractalError("unavailable", `node ${node} is not in the cluster map`);
    let link = this.links.get(node);
    if (link !== undefined && link.address !== descriptor.grpc) {
      link.close();
      link = undefined;
    }
    if (link === undefined) {
      link = new PeerLink(node, descriptor.grpc, this.timeoutMs, this.log);
      this.links.set(node, link);
    }
    return link;
  }

  all(): PeerLink[] {
    return [...this.links.values()];
  }

  close(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}
