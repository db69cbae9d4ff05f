locals {
  # The deployed regions' module instances, as one list (each module block has 0 or 1 instances).
  deployed = concat(module.region_us_east_1, module.region_us_west_2, module.region_eu_west_1, module.region_ap_southeast_1)
}

output "client_urls" {
  description = "Region => URL of the region's load balancer (web chat, socket.io, HTTP API)."
  value       = { for m in local.deployed : m.region => m.client_url }
}

output "lb_dns_names" {
  description = "Region => NLB DNS name (for a CNAME / Route 53 alias, e.g. latency-based routing)."
  value       = { for m in local.deployed : m.region => m.lb_dns_name }
}

output "bucket_names" {
  description = "Region => the object store bucket of the region's cluster."
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
  description = "Region => the command that makes joining nodes active (run once after the first apply and after every scale-up), through SSM on the region's first node."
  value = {
    for m in local.deployed : m.region =>
    "aws ssm send-command --region ${m.region} --document-name AWS-RunShellScript --instance-ids ${m.nodes["${m.region}-n1"].instance_id} --parameters 'commands=[\"fractal-admin rebalance\"]'"
  }
}
