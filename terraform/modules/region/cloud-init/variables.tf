variable "region" {
  description = "AWS region of the node: its Fractal --region (the ring of regions places rooms by it)."
  type        = string
}

variable "bucket_region" {
  description = "AWS region of the object store bucket: the S3 client's AWS_REGION (the node's own region, or the home region with topology = \"global\")."
  type        = string
}

variable "object_store" {
  description = "The nodes' object store, s3://bucket/prefix (shared by every region with topology = \"global\")."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.object_store))
    error_message = "object_store must be s3://bucket/prefix."
  }
}

variable "http_port" {
  description = "HTTP / socket.io port of the node (the NLB target port)."
  type        = number
}

variable "grpc_port" {
  description = "gRPC port of the node (peer traffic)."
  type        = number
}

variable "data_dir" {
  description = "The node's data directory (its SQLite file)."
  type        = string
  default     = "/var/lib/fractal"
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

variable "admin_token" {
  description = "Bearer token for /api/admin (FRACTAL_ADMIN_TOKEN in /etc/fractal/fractal.env)."
  type        = string
  sensitive   = true
}

variable "fractal_source" {
  description = "Where the instance gets Fractal Chat: a git URL or an https URL of a .tgz/.tar.gz."
  type        = string
}

variable "fractal_version" {
  description = "Git ref (tag, branch or commit) checked out from a git fractal_source; ignored for tarballs."
  type        = string
}

variable "node_major" {
  description = "Node.js major version installed from NodeSource."
  type        = number
  default     = 20
}

variable "stop_timeout_seconds" {
  description = "How long systemd waits for a graceful stop (final checkpoints) before SIGKILL."
  type        = number
  default     = 90
}
