# Fractal Chat on AWS: one Fractal cluster per region (modules/region), VPCs of different regions peered
# pairwise (modules/peering).
#
# Terraform (through 1.11) cannot choose a provider per for_each instance, and each region needs its own aws
# provider. So the supported regions are a fixed set, each with an aliased provider and one module block
# whose count is 1 when the region is in var.regions; likewise one peering block per pair of supported
# regions. To support another region: add its provider alias, a region module block, peering blocks for its
# pairs, and the region to the lists in locals.supported_regions and variable "regions" (README "Adding a
# region"). test/terraform/terraform.test.ts checks that these lists and blocks agree.

locals {
  # Order matters: a region's VPC CIDR is derived from its place here, so only ever append.
  supported_regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"]

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

# --- one Fractal cluster per deployed region ----------------------------------------------------------------

module "region_us_east_1" {
  source    = "./modules/region"
  count     = contains(var.regions, "us-east-1") ? 1 : 0
  providers = { aws = aws.us_east_1 }

  region          = "us-east-1"
  vpc_cidr        = local.vpc_cidrs["us-east-1"]
  peer_cidrs      = local.peer_cidrs["us-east-1"]
  certificate_arn = lookup(var.certificate_arns, "us-east-1", null)

  project                 = var.project
  az_count                = var.az_count
  nodes_per_region        = var.nodes_per_region
  instance_type           = var.instance_type
  architecture            = var.architecture
  root_volume_gb          = var.root_volume_gb
  fractal_source          = var.fractal_source
  fractal_version         = var.fractal_version
  admin_token             = var.admin_token
  lease_ttl               = var.lease_ttl
  checkpoint_interval     = var.checkpoint_interval
  log_level               = var.log_level
  client_cidrs            = var.client_cidrs
  ssh_enabled             = var.ssh_enabled
  ssh_cidr                = var.ssh_cidr
  ssh_key_name            = var.ssh_key_name
  ssm_enabled             = var.ssm_enabled
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "region_us_west_2" {
  source    = "./modules/region"
  count     = contains(var.regions, "us-west-2") ? 1 : 0
  providers = { aws = aws.us_west_2 }

  region          = "us-west-2"
  vpc_cidr        = local.vpc_cidrs["us-west-2"]
  peer_cidrs      = local.peer_cidrs["us-west-2"]
  certificate_arn = lookup(var.certificate_arns, "us-west-2", null)

  project                 = var.project
  az_count                = var.az_count
  nodes_per_region        = var.nodes_per_region
  instance_type           = var.instance_type
  architecture            = var.architecture
  root_volume_gb          = var.root_volume_gb
  fractal_source          = var.fractal_source
  fractal_version         = var.fractal_version
  admin_token             = var.admin_token
  lease_ttl               = var.lease_ttl
  checkpoint_interval     = var.checkpoint_interval
  log_level               = var.log_level
  client_cidrs            = var.client_cidrs
  ssh_enabled             = var.ssh_enabled
  ssh_cidr                = var.ssh_cidr
  ssh_key_name            = var.ssh_key_name
  ssm_enabled             = var.ssm_enabled
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "region_eu_west_1" {
  source    = "./modules/region"
  count     = contains(var.regions, "eu-west-1") ? 1 : 0
  providers = { aws = aws.eu_west_1 }

  region          = "eu-west-1"
  vpc_cidr        = local.vpc_cidrs["eu-west-1"]
  peer_cidrs      = local.peer_cidrs["eu-west-1"]
  certificate_arn = lookup(var.certificate_arns, "eu-west-1", null)

  project                 = var.project
  az_count                = var.az_count
  nodes_per_region        = var.nodes_per_region
  instance_type           = var.instance_type
  architecture            = var.architecture
  root_volume_gb          = var.root_volume_gb
  fractal_source          = var.fractal_source
  fractal_version         = var.fractal_version
  admin_token             = var.admin_token
  lease_ttl               = var.lease_ttl
  checkpoint_interval     = var.checkpoint_interval
  log_level               = var.log_level
  client_cidrs            = var.client_cidrs
  ssh_enabled             = var.ssh_enabled
  ssh_cidr                = var.ssh_cidr
  ssh_key_name            = var.ssh_key_name
  ssm_enabled             = var.ssm_enabled
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
}

module "region_ap_southeast_1" {
  source    = "./modules/region"
  count     = contains(var.regions, "ap-southeast-1") ? 1 : 0
  providers = { aws = aws.ap_southeast_1 }

  region          = "ap-southeast-1"
  vpc_cidr        = local.vpc_cidrs["ap-southeast-1"]
  peer_cidrs      = local.peer_cidrs["ap-southeast-1"]
  certificate_arn = lookup(var.certificate_arns, "ap-southeast-1", null)

  project                 = var.project
  az_count                = var.az_count
  nodes_per_region        = var.nodes_per_region
  instance_type           = var.instance_type
  architecture            = var.architecture
  root_volume_gb          = var.root_volume_gb
  fractal_source          = var.fractal_source
  fractal_version         = var.fractal_version
  admin_token             = var.admin_token
  lease_ttl               = var.lease_ttl
  checkpoint_interval     = var.checkpoint_interval
  log_level               = var.log_level
  client_cidrs            = var.client_cidrs
  ssh_enabled             = var.ssh_enabled
  ssh_cidr                = var.ssh_cidr
  ssh_key_name            = var.ssh_key_name
  ssm_enabled             = var.ssm_enabled
  noncurrent_version_days = var.noncurrent_version_days
  force_destroy           = var.force_destroy
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
