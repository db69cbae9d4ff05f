variable "name" {
  description = "Name tag of the peering connection."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "requester" {
  description = "The requesting region's VPC: region, vpc_id, vpc_cidr, private_route_table_id."
  type = object({
    region                 = string
    vpc_id                 = string
    vpc_cidr               = string
    private_route_table_id = string
  })
}

variable "accepter" {
  description = "The accepting region's VPC: region, vpc_id, vpc_cidr, private_route_table_id."
  type = object({
    region                 = string
    vpc_id                 = string
    vpc_cidr               = string
    private_route_table_id = string
  })
}
