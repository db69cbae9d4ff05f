variable "topology" {
  description = "\"global\": one Fractal cluster across every region (one cluster map in the home region's bucket; a ring of regions, in each a ring of nodes). \"per-region\": one cluster per region, each with its own bucket."
  type        = string
  default     = "global"

  validation {
    condition     = contains(["global", "per-region"], var.topology)
    error_message = "topology must be \"global\" or \"per-region\"."
  }
}

variable "regions" {
  description = "Regions to deploy. Supported: us-east-1, us-west-2, eu-west-1, ap-southeast-1 (one aliased provider each; see README \"Adding a region\")."
  type        = list(string)
  default     = ["us-east-1", "eu-west-1"]

  validation {
    condition     = length(var.regions) >= 1 && length(distinct(var.regions)) == length(var.regions)
    error_message = "regions must list at least one region, each once."
  }

  validation {
    condition     = alltrue([for r in var.regions : contains(["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1"], r)])
    error_message = "Supported regions: us-east-1, us-west-2, eu-west-1, ap-southeast-1 (add a provider alias and module blocks in main.tf for others)."
  }
}

variable "home_region" {
  description = "topology = \"global\": the region of the one bucket that holds the cluster map, the leases and every room's checkpoints (null = the first of regions). Ignored with topology = \"per-region\"."
  type        = string
  default     = null

  validation {
    condition     = contains(var.regions, coalesce(var.home_region, var.regions[0]))
    error_message = "home_region must be one of regions (or null for the first of them)."
  }
}

variable "nodes_per_region" {
  description = "Fractal nodes per region. After raising it, run `fractal admin rebalance` so the new nodes own rooms."
  type        = number
  default     = 3

  validation {
    condition     = var.nodes_per_region >= 1 && var.nodes_per_region <= 64 && floor(var.nodes_per_region) == var.nodes_per_region
    error_message = "nodes_per_region must be a whole number from 1 to 64."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the nodes."
  type        = string
  default     = "t3.medium"
}

variable "architecture" {
  description = "CPU architecture of the Ubuntu 24.04 AMI: amd64 or arm64 (must fit instance_type, e.g. arm64 for t4g/c7g)."
  type        = string
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.architecture)
    error_message = "architecture must be amd64 or arm64."
  }
}

variable "root_volume_gb" {
  description = "Encrypted gp3 root volume per node (holds /var/lib/fractal, the node's SQLite file)."
  type        = number
  default     = 30
}

variable "fractal_source" {
  description = "Where instances get Fractal Chat: a git URL (e.g. https://github.com/acme/fractal-chat.git) checked out at fractal_version, or an https URL of a .tgz/.tar.gz (e.g. `npm pack` output on S3 or a release archive)."
  type        = string

  validation {
    condition     = can(regex("^(https://|git@|ssh://|git://)[^' ]+$", var.fractal_source))
    error_message = "fractal_source must be an https://, ssh:// or git@ URL without spaces or quotes."
  }
}

variable "fractal_version" {
  description = "Git ref (tag, branch or commit) of fractal_source; pin a tag or commit. Ignored for tarball URLs."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.fractal_version))
    error_message = "fractal_version must be a git ref (letters, digits, . _ / -)."
  }
}

variable "admin_token" {
  description = "Bearer token for the nodes' admin API (/api/admin, `fractal admin --admin-token`). At least 32 characters of A-Z a-z 0-9 . _ ~ + / = -. Pass it with TF_VAR_admin_token; it ends up in the state and the launch templates' user data."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9._~+/=-]{32,256}$", var.admin_token))
    error_message = "admin_token must be 32-256 characters of A-Z a-z 0-9 . _ ~ + / = -."
  }
}

variable "lease_ttl" {
  description = "fractal node --lease-ttl: a node that has not renewed its lease this long is failed over. null = 10s with topology = \"global\" (renewals cross an ocean), 5s with topology = \"per-region\"."
  type        = string
  default     = null

  validation {
    condition     = var.lease_ttl == null || can(regex("^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)?$", var.lease_ttl))
    error_message = "lease_ttl must be a duration like 10s or 2500ms."
  }
}

variable "checkpoint_interval" {
  description = "fractal node --checkpoint-interval: how often rooms with new messages are checkpointed to S3 (S3 PUT cost scales with 1/interval, see README)."
  type        = string
  default     = "1s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)?$", var.checkpoint_interval))
    error_message = "checkpoint_interval must be a duration like 1s or 500ms."
  }
}

variable "log_level" {
  description = "fractal node --log-level."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["fatal", "error", "warn", "info", "debug", "trace", "silent"], var.log_level)
    error_message = "log_level must be one of fatal, error, warn, info, debug, trace, silent."
  }
}

variable "project" {
  description = "Name prefix of every resource (lowercase, max 16 characters: it is part of bucket, NLB and target group names)."
  type        = string
  default     = "fractal-chat"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.project))
    error_message = "project must be 2-16 characters of a-z 0-9 -, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource (provider default_tags), besides Project and ManagedBy."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr_base" {
  description = "Address block split into one VPC per supported region (4 more prefix bits each, by the region's place in the supported list, so adding a region never renumbers the others): 10.64.0.0/12 gives us-east-1 10.64.0.0/16, us-west-2 10.65.0.0/16, eu-west-1 10.66.0.0/16, ap-southeast-1 10.67.0.0/16."
  type        = string
  default     = "10.64.0.0/12"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr_base, 4, 15)) && tonumber(split("/", var.vpc_cidr_base)[1]) >= 8 && tonumber(split("/", var.vpc_cidr_base)[1]) <= 16
    error_message = "vpc_cidr_base must be an IPv4 CIDR with a prefix from /8 to /16."
  }
}

variable "az_count" {
  description = "Availability zones per region (2 or 3): a public and a private subnet in each, nodes spread round-robin."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "client_cidrs" {
  description = "Networks allowed to reach the load balancers (the chat's clients)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arns" {
  description = "ACM certificate ARN per region for a TLS listener on 443 (regions without one get only TCP on 80)."
  type        = map(string)
  default     = {}
}

variable "cross_region_peering" {
  description = "Peer every pair of deployed regions' VPCs (encrypted inter-region links, routes, gRPC allowed from the peer CIDRs). Required by topology = \"global\" with more than one region: the nodes of different regions forward rooms to each other."
  type        = bool
  default     = true

  validation {
    condition     = var.cross_region_peering || var.topology == "per-region" || length(var.regions) == 1
    error_message = "topology = \"global\" with several regions needs cross_region_peering: nodes of different regions talk gRPC over the peering."
  }
}

variable "ssh_enabled" {
  description = "Allow SSH (22) from ssh_cidr to the nodes. Off by default: use SSM Session Manager."
  type        = bool
  default     = false
}

variable "ssh_cidr" {
  description = "Network allowed to SSH when ssh_enabled (never 0.0.0.0/0; the nodes are in private subnets, so a VPN, bastion or peered network)."
  type        = string
  default     = null

  validation {
    condition     = var.ssh_cidr == null || (can(cidrhost(var.ssh_cidr, 0)) && var.ssh_cidr != "0.0.0.0/0")
    error_message = "ssh_cidr must be a specific IPv4 CIDR, not 0.0.0.0/0."
  }
}

variable "ssh_key_name" {
  description = "EC2 key pair name (in every deployed region) when ssh_enabled."
  type        = string
  default     = null
}

variable "ssm_enabled" {
  description = "Give the nodes the AmazonSSMManagedInstanceCore policy (SSM Session Manager / Run Command)."
  type        = bool
  default     = true
}

variable "noncurrent_version_days" {
  description = "Days noncurrent object versions are kept in the bucket(s) (current objects never expire)."
  type        = number
  default     = 7
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete the non-empty bucket(s). Set true (and apply) only right before destroying."
  type        = bool
  default     = false
}
