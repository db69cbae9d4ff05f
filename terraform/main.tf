# Fractal Chat on AWS. topology = "global" (the default): ONE Fractal cluster across every deployed region,
# the fractal shape of the application: a ring of regions picks a room's home region, that region's ring of
# nodes its owner. The cluster map, leases and checkpoints live in one bucket in the home region
# (modules/bucket); every region (modules/region) runs its nodes with --region <its AWS region> against that
# bucket, and the VPCs of different regions are peered pairwise (modules/peering) for the nodes' gRPC.
# topology = "per-region": one cluster per region, each with its own bucket.
#
# Terraform (through 1.11) cannot choose a provider per for_each instance, and each region needs its own aws
# provider. So the supported regions are a fixed set, each with an aliased provider, one bucket module block
# and one region module block whose counts say whether the region holds a bucket / is deployed; likewise one
# peering block per pair of supported regions. To support another region: add its provider alias, bucket and
# region module blocks, peering blocks for its pairs, moved blocks in moved.tf, and the region to the lists in
# locals.supported_regions and variable "regions" (README "Adding a region"). test/terraform/terraform.test.ts
# checks that these lists and blocks agree, and evaluates the configuration for both topologies.

locals {
  # Order matters: a region's VPC CIDR is derived from its place here, so only ever append.
  supported_regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"]

  global = var.topology == "global"

  # global: the region of the one bucket (cluster map, leases, checkpoints of every region's nodes).
  home_region = coalesce(var.home_region, var.regions[0])

  # The regions that hold a bucket: the home region (global), or every deployed region (per-region).
  bucket_regions = local.global ? [local.home_region] : var.regions

  # Lease renewals and map reads cross an ocean in global topology: a longer TTL by default.
  lease_ttl = coalesce(var.lease_ttl, local.global ? "10s" : "5s")

  vpc_cidrs = { for i, r in local.supported_regions : r => cidrsubnet(var.vpc_cidr_base, 4, i) }

  # gRPC may come from the other deployed regions' VPCs (over the peering).
  peer_cidrs = {
    for r in local.supported_regions : r => var.cross_region_peering ? [for o in var.regions : local.vpc_cidrs[o] if o != r] : []
  }

  # "a|b" => whether that pair of regions is peered.
  peered = {
    for pair in setproduct(local.supported_regions, local.supported_regions) : "${pair[0]}|${pair[1]}" =>
    var.cross_region_peering && contains(var.regions, pair[0]) && contains(var.regions, pair[1])
  }

  # Bucket region => {name, arn, region} of the buckets created (one per module block with count 1).
  buckets = {
    for b in concat(module.bucket_us_east_1, module.bucket_us_west_2, module.bucket_eu_west_1, module.bucket_ap_southeast_1) : b.region => b.bucket
  }

  # Region => the bucket its nodes use: the home region's (global) or its own (per-region).
  region_buckets = { for r in local.supported_regions : r => lookup(local.buckets, local.global ? local.home_region : r, null) }

  default_tags = merge(var.tags, { Project = var.project, ManagedBy = "terraform" })
}

# --- providers: one per supported region ---------------------------------------------------------------

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"

  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "us_west_2"
  region = "us-west-2"

  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "eu_west_1"
  region = "eu-west-1"

  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "ap_southeast_1"
  region = "ap-southeast-1"

  default_tags {
    tags = local.default_tags
  }
}

# --- object store buckets: the home region's (global) or one per deployed region (per-region) -------------

module "bucket_us_east_1" {
  source    = "./modules/bucket"
  count     = contains(local.bucket_regions, "us-east-1") ? 1 : 0
  providers = { aws = aws.us_east_1 }

  region                  = "us-east-1"
  project                 = var.project
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "bucket_us_west_2" {
  source    = "./modules/bucket"
  count     = contains(local.bucket_regions, "us-west-2") ? 1 : 0
  providers = { aws = aws.us_west_2 }

  region                  = "us-west-2"
  project                 = var.project
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "bucket_eu_west_1" {
  source    = "./modules/bucket"
  count     = contains(local.bucket_regions, "eu-west-1") ? 1 : 0
  providers = { aws = aws.eu_west_1 }

  region                  = "eu-west-1"
  project                 = var.project
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "bucket_ap_southeast_1" {
  source    = "./modules/bucket"
  count     = contains(local.bucket_regions, "ap-southeast-1") ? 1 : 0
  providers = { aws = aws.ap_southeast_1 }

  region                  = "ap-southeast-1"
  project                 = var.project
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

# --- the nodes of every deployed region: one ring each (of the one cluster, or each its own cluster) --------

module "region_us_east_1" {
  source    = "./modules/region"
  count     = contains(var.regions, "us-east-1") ? 1 : 0
  providers = { aws = aws.us_east_1 }

  region          = "us-east-1"
  vpc_cidr        = local.vpc_cidrs["us-east-1"]
  peer_cidrs      = local.peer_cidrs["us-east-1"]
  certificate_arn = lookup(var.certificate_arns, "us-east-1", null)
  bucket          = local.region_buckets["us-east-1"]

  project             = var.project
  az_count            = var.az_count
  nodes_per_region    = var.nodes_per_region
  instance_type       = var.instance_type
  architecture        = var.architecture
  root_volume_gb      = var.root_volume_gb
  fractal_source      = var.fractal_source
  fractal_version     = var.fractal_version
  admin_token         = var.admin_token
  lease_ttl           = local.lease_ttl
  checkpoint_interval = var.checkpoint_interval
  log_level           = var.log_level
  client_cidrs        = var.client_cidrs
  ssh_enabled         = var.ssh_enabled
  ssh_cidr            = var.ssh_cidr
  ssh_key_name        = var.ssh_key_name
  ssm_enabled         = var.ssm_enabled
}

module "region_us_west_2" {
  source    = "./modules/region"
  count     = contains(var.regions, "us-west-2") ? 1 : 0
  providers = { aws = aws.us_west_2 }

  region          = "us-west-2"
  vpc_cidr        = local.vpc_cidrs["us-west-2"]
  peer_cidrs      = local.peer_cidrs["us-west-2"]
  certificate_arn = lookup(var.certificate_arns, "us-west-2", null)
  bucket          = local.region_buckets["us-west-2"]

  project             = var.project
  az_count            = var.az_count
  nodes_per_region    = var.nodes_per_region
  instance_type       = var.instance_type
  architecture        = var.architecture
  root_volume_gb      = var.root_volume_gb
  fractal_source      = var.fractal_source
  fractal_version     = var.fractal_version
  admin_token         = var.admin_token
  lease_ttl           = local.lease_ttl
  checkpoint_interval = var.checkpoint_interval
  log_level           = var.log_level
  client_cidrs        = var.client_cidrs
  ssh_enabled         = var.ssh_enabled
  ssh_cidr            = var.ssh_cidr
  ssh_key_name        = var.ssh_key_name
  ssm_enabled         = var.ssm_enabled
}

module "region_eu_west_1" {
  source    = "./modules/region"
  count     = contains(var.regions, "eu-west-1") ? 1 : 0
  providers = { aws = aws.eu_west_1 }

  region          = "eu-west-1"
  vpc_cidr        = local.vpc_cidrs["eu-west-1"]
  peer_cidrs      = local.peer_cidrs["eu-west-1"]
  certificate_arn = lookup(var.certificate_arns, "eu-west-1", null)
  bucket          = local.region_buckets["eu-west-1"]

  project             = var.project
  az_count            = var.az_count
  nodes_per_region    = var.nodes_per_region
  instance_type       = var.instance_type
  architecture        = var.architecture
  root_volume_gb      = var.root_volume_gb
  fractal_source      = var.fractal_source
  fractal_version     = var.fractal_version
  admin_token         = var.admin_token
  lease_ttl           = local.lease_ttl
  checkpoint_interval = var.checkpoint_interval
  log_level           = var.log_level
  client_cidrs        = var.client_cidrs
  ssh_enabled         = var.ssh_enabled
  ssh_cidr            = var.ssh_cidr
  ssh_key_name        = var.ssh_key_name
  ssm_enabled         = var.ssm_enabled
}

module "region_ap_southeast_1" {
  source    = "./modules/region"
  count     = contains(var.regions, "ap-southeast-1") ? 1 : 0
  providers = { aws = aws.ap_southeast_1 }

  region          = "ap-southeast-1"
  vpc_cidr        = local.vpc_cidrs["ap-southeast-1"]
  peer_cidrs      = local.peer_cidrs["ap-southeast-1"]
  certificate_arn = lookup(var.certificate_arns, "ap-southeast-1", null)
  bucket          = local.region_buckets["ap-southeast-1"]

  project             = var.project
  az_count            = var.az_count
  nodes_per_region    = var.nodes_per_region
  instance_type       = var.instance_type
  architecture        = var.architecture
  root_volume_gb      = var.root_volume_gb
  fractal_source      = var.fractal_source
  fractal_version     = var.fractal_version
  admin_token         = var.admin_token
  lease_ttl           = local.lease_ttl
  checkpoint_interval = var.checkpoint_interval
  log_level           = var.log_level
  client_cidrs        = var.client_cidrs
  ssh_enabled         = var.ssh_enabled
  ssh_cidr            = var.ssh_cidr
  ssh_key_name        = var.ssh_key_name
  ssm_enabled         = var.ssm_enabled
}

# --- cross-region VPC peering: every pair of deployed regions ---------------------------------------------

module "peering_us_east_1__us_west_2" {
  source    = "./modules/peering"
  count     = local.peered["us-east-1|us-west-2"] ? 1 : 0
  providers = { aws.requester = aws.us_east_1, aws.accepter = aws.us_west_2 }

  name      = "${var.project}-us-east-1-us-west-2"
  requester = module.region_us_east_1[0].peering
  accepter  = module.region_us_west_2[0].peering
}

module "peering_us_east_1__eu_west_1" {
  source    = "./modules/peering"
  count     = local.peered["us-east-1|eu-west-1"] ? 1 : 0
  providers = { aws.requester = aws.us_east_1, aws.accepter = aws.eu_west_1 }

  name      = "${var.project}-us-east-1-eu-west-1"
  requester = module.region_us_east_1[0].peering
  accepter  = module.region_eu_west_1[0].peering
}

module "peering_us_east_1__ap_southeast_1" {
  source    = "./modules/peering"
  count     = local.peered["us-east-1|ap-southeast-1"] ? 1 : 0
  providers = { aws.requester = aws.us_east_1, aws.accepter = aws.ap_southeast_1 }

  name      = "${var.project}-us-east-1-ap-southeast-1"
  requester = module.region_us_east_1[0].peering
  accepter  = module.region_ap_southeast_1[0].peering
}

module "peering_us_west_2__eu_west_1" {
  source    = "./modules/peering"
  count     = local.peered["us-west-2|eu-west-1"] ? 1 : 0
  providers = { aws.requester = aws.us_west_2, aws.accepter = aws.eu_west_1 }

  name      = "${var.project}-us-west-2-eu-west-1"
  requester = module.region_us_west_2[0].peering
  accepter  = module.region_eu_west_1[0].peering
}

module "peering_us_west_2__ap_southeast_1" {
  source    = "./modules/peering"
  count     = local.peered["us-west-2|ap-southeast-1"] ? 1 : 0
  providers = { aws.requester = aws.us_west_2, aws.accepter = aws.ap_southeast_1 }

  name      = "${var.project}-us-west-2-ap-southeast-1"
  requester = module.region_us_west_2[0].peering
  accepter  = module.region_ap_southeast_1[0].peering
}

module "peering_eu_west_1__ap_southeast_1" {
  source    = "./modules/peering"
  count     = local.peered["eu-west-1|ap-southeast-1"] ? 1 : 0
  providers = { aws.requester = aws.eu_west_1, aws.accepter = aws.ap_southeast_1 }

  name      = "${var.project}-eu-west-1-ap-southeast-1"
  requester = module.region_eu_west_1[0].peering
  accepter  = module.region_ap_southeast_1[0].peering
}
