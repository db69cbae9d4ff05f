output "region" {
  description = "The region."
  value       = var.region
}

output "client_url" {
  description = "Where clients connect (the NLB)."
  value       = var.certificate_arn == null ? "http://${aws_lb.this.dns_name}" : "https://${aws_lb.this.dns_name}"
}

output "lb_dns_name" {
  description = "DNS name of the NLB (point a CNAME / alias at it)."
  value       = aws_lb.this.dns_name
}

output "bucket_name" {
  description = "The object store bucket the nodes use (the shared one with topology = \"global\")."
  value       = var.bucket.name
}

output "object_store" {
  description = "The nodes' --object-store."
  value       = local.object_store
}

output "vpc_id" {
  description = "The region's VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The region's VPC CIDR."
  value       = aws_vpc.this.cidr_block
}

output "private_route_table_id" {
  description = "Route table of the private subnets (peering routes go here)."
  value       = aws_route_table.private.id
}

output "node_security_group_id" {
  description = "Security group of the nodes."
  value       = aws_security_group.node.id
}

output "nodes" {
  description = "Node id => {instance_id, private_ip, az}."
  value       = { for id, i in aws_instance.node : id => { instance_id = i.id, private_ip = i.private_ip, az = i.availability_zone } }
}

output "peering" {
  description = "What modules/peering needs from this region."
  value = {
    region                 = var.region
    vpc_id                 = aws_vpc.this.id
    vpc_cidr               = aws_vpc.this.cidr_block
    private_route_table_id = aws_route_table.private.id
  }
}
