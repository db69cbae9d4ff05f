variable "region" {
  description = "The AWS region of the bucket (must match the aws provider passed in)."
  type        = string
}

variable "project" {
  description = "Name prefix: the bucket is named <project>-<region>-<random suffix>."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "noncurrent_version_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept."
  type        = number
  default     = 7
}

variable "force_destroy" {
  description = "Let terraform destroy delete a non-empty bucket (every version of every checkpoint)."
  type        = bool
  default     = false
}
