locals {
  # The deployed regions' module instances, as one list (each module block has 0 or 1 instances).
  deployed = concat(module.region_us_east_1, module.region_us_west_2, module.region_eu_west_1, module.region_ap_southeast_1)

  # The regions whose first node runs `fractal admin rebalance`: the home region's for the one cluster
  # (global), every region for its own cluster (per-region).
  rebalance_regions = local.global ? [local.home_region] : var.regions
}

output "topology" {
  description = "\"global\" (one cluster across the regions) or \"per-region\" (one cluster per region)."
  value       = var.topology
}

output "home_region" {
  description = "topology = \"global\": the region of the shared bucket (cluster map, leases, checkpoints); null with \"per-region\"."
  value       = local.global ? local.home_region : null
}

output "client_urls" {
  description = "Region => URL of the region's load balancer (web chat, socket.io, HTTP API). With topology = \"global\" every URL reaches the same cluster: any room, any session token."
  value       = { for m in local.deployed : m.region => m.client_url }
}

output "lb_dns_names" {
  description = "Region => NLB DNS name (for a CNAME / Route 53 alias, e.g. latency-based routing)."
  value       = { for m in local.deployed : m.region => m.lb_dns_name }
}

output "buckets" {
  description = "Bucket region => bucket name, one entry per bucket created: the one shared bucket with topology = \"global\", one per region with \"per-region\"."
  value       = { for r, b in local.buckets : r => b.name }
}

output "bucket_names" {
  description = "Region => the bucket that region's nodes use (the same shared bucket for every region with topology = \"global\")."
  value       = { for m in local.deployed : m.region => m.bucket_name }
}

output "object_stores" {
  description = "Region => the nodes' --object-store (s3://bucket/prefix)."
  value       = { for m in local.deployed : m.region => m.object_store }
}

output "nodes" {
  description = "Region => node id => {instance_id, private_ip, az}."
  value       = { for m in local.deployed : m.region => m.nodes }
}

output "vpc_cidrs" {
  description = "Region => VPC CIDR."
  value       = { for m in local.deployed : m.region => m.vpc_cidr }
}

output "rebalance_commands" {
  description = "The command that makes joining nodes active (run once after the first apply and after every scale-up), through SSM on a first node: one for the whole cluster (global, keyed by the home region) or one per region (per-region)."
  value = {
    for m in local.deployed : m.region =>
    "aws ssm send-command --region ${m.region} --document-name AWS-RunShellScript --instance-ids ${m.nodes["${m.region}-n1"].instance_id} --parameters 'commands=[\"fractal-admin rebalance\"]'"
    if contains(local.rebalance_regions, m.region)
  }
}
