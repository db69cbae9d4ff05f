# Two regions, three nodes each: ONE Fractal Chat cluster across us-east-1 and eu-west-1 (topology "global":
# a ring of two regions, in each a ring of three nodes), its cluster map in a bucket in us-east-1, the VPCs
# peered for the nodes' gRPC.
#
#   cd terraform/examples/two-regions
#   export TF_VAR_admin_token="$(openssl rand -base64 36 | tr -d '\n')"
#   terraform init && terraform apply
#   terraform output client_urls
#
# The same settings work from terraform/ itself with `terraform apply -var-file=examples/two-regions/two-regions.tfvars`.

terraform {
  required_version = ">= 1.9"
}

variable "admin_token" {
  description = "Bearer token for the nodes' admin API (TF_VAR_admin_token)."
  type        = string
  sensitive   = true
}

module "fractal" {
  source = "../.."

  topology         = "global"
  regions          = ["us-east-1", "eu-west-1"]
  home_region      = "us-east-1"
  nodes_per_region = 3
  instance_type    = "t3.medium"

  fractal_source  = "https://github.com/example-org/fractal-chat.git"
  fractal_version = "v0.1.0"
  admin_token     = var.admin_token

  lease_ttl           = "10s"
  checkpoint_interval = "1s"

  project       = "fractal-chat"
  vpc_cidr_base = "10.64.0.0/12"
  tags          = { Environment = "staging", Owner = "chat-team" }
}

output "client_urls" {
  description = "Region => load balancer URL."
  value       = module.fractal.client_urls
}

output "home_region" {
  description = "The region of the shared bucket."
  value       = module.fractal.home_region
}

output "buckets" {
  description = "The shared object store bucket (home region => name)."
  value       = module.fractal.buckets
}

output "rebalance_commands" {
  description = "The command to run after the first apply and after scaling up (one for the whole cluster)."
  value       = module.fractal.rebalance_commands
}
