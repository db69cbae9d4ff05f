variable "region" {
  description = "The AWS region this module deploys to (must match the aws provider passed in)."
  type        = string
}

variable "project" {
  description = "Name prefix of every resource."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr" {
  description = "CIDR of this region's VPC (must not overlap the peer regions' VPCs)."
  type        = string
}

variable "az_count" {
  description = "Availability zones used (public and private subnet in each)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "peer_cidrs" {
  description = "VPC CIDRs of the peered regions: allowed to reach the nodes' gRPC port."
  type        = list(string)
  default     = []
}

variable "nodes_per_region" {
  description = "Fractal nodes (EC2 instances) in this region, spread round-robin over the AZs."
  type        = number
}

variable "instance_type" {
  description = "EC2 instance type of the nodes."
  type        = string
}

variable "architecture" {
  description = "CPU architecture of the Ubuntu AMI: amd64 or arm64 (must fit instance_type)."
  type        = string
  default     = "amd64"
}

variable "ami_id" {
  description = "AMI of the nodes; null = the current Ubuntu 24.04 LTS (the user data assumes Ubuntu/Debian)."
  type        = string
  default     = null
}

variable "root_volume_gb" {
  description = "Size of each node's encrypted gp3 root volume (holds the SQLite data dir)."
  type        = number
  default     = 30
}

variable "fractal_source" {
  description = "Git URL or https .tgz URL the instances install Fractal Chat from."
  type        = string
}

variable "fractal_version" {
  description = "Git ref of fractal_source."
  type        = string
}

variable "admin_token" {
  description = "Bearer token for the nodes' /api/admin."
  type        = string
  sensitive   = true
}

variable "lease_ttl" {
  description = "fractal node --lease-ttl."
  type        = string
}

variable "checkpoint_interval" {
  description = "fractal node --checkpoint-interval."
  type        = string
}

variable "log_level" {
  description = "fractal node --log-level."
  type        = string
  default     = "info"
}

variable "bucket" {
  description = "The object store bucket of the nodes (modules/bucket's output): name, ARN and region. The IAM policy names only this bucket, and the nodes' AWS_REGION is its region."
  type = object({
    name   = string
    arn    = string
    region = string
  })
}

variable "object_prefix" {
  description = "Key prefix of the object store inside the bucket."
  type        = string
  default     = "fractal"
}

variable "client_cidrs" {
  description = "Client networks allowed to reach the load balancer listeners."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ACM certificate for a TLS listener on 443 (null = only the plain TCP listener on 80)."
  type        = string
  default     = null
}

variable "ssh_enabled" {
  description = "Open SSH (22) to ssh_cidr and set ssh_key_name on the instances."
  type        = bool
  default     = false
}

variable "ssh_cidr" {
  description = "Network allowed to SSH to the nodes when ssh_enabled (they sit in private subnets: a VPN, a bastion or a peered network)."
  type        = string
  default     = null
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH when ssh_enabled."
  type        = string
  default     = null
}

variable "ssm_enabled" {
  description = "Attach AmazonSSMManagedInstanceCore so operators reach the nodes with SSM Session Manager / Run Command."
  type        = bool
  default     = true
}
