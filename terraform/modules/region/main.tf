# One Fractal region: a VPC (public + private subnet per AZ, one NAT gateway, an S3 gateway endpoint), an IAM
# instance profile, a launch template whose user data installs and starts the node, `nodes_per_region`
# instances spread over the AZs, and an internet-facing NLB. The object store bucket comes from modules/bucket
# (var.bucket): the region's own (topology = "per-region": the region is a cluster of its own) or the home
# region's, shared by every region (topology = "global": the region is one ring of nodes in the one cluster,
# whose map lives in that bucket). See terraform/README.md.
locals {
  name = "${var.project}-${var.region}"

  # Ports: the same locals feed the security groups, the target group and the systemd unit.
  http_port     = 8080
  grpc_port     = 9080
  data_dir      = "/var/lib/fractal"
  listener_port = 80
  tls_port      = 443
  # Client-facing ports of the NLB (TLS only with a certificate).
  lb_ports = var.certificate_arn == null ? [local.listener_port] : [local.listener_port, local.tls_port]

  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  # Subnets: /4 more bits than the VPC (a /16 VPC gets /20 subnets); public 0..2, private 8..10.
  public_subnets  = { for i, az in local.azs : az => cidrsubnet(var.vpc_cidr, 4, i) }
  private_subnets = { for i, az in local.azs : az => cidrsubnet(var.vpc_cidr, 4, 8 + i) }

  # Nodes: stable ids (<region>-n<i>), round-robin over the AZs. The id reaches the instance as the tag
  # FractalNodeId, which the user data reads from the instance metadata.
  nodes = {
    for i in range(var.nodes_per_region) : "${var.region}-n${i + 1}" => {
      az = local.azs[i % length(local.azs)]
    }
  }

  object_store = "s3://${var.bucket.name}/${var.object_prefix}"

  tags = merge(var.tags, { "fractal:region" = var.region })
}

data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

# --- network ---------------------------------------------------------------------------------------------

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "public" {
  for_each = local.public_subnets

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  tags              = merge(local.tags, { Name = "${local.name}-public-${each.key}", "fractal:tier" = "public" })
}

resource "aws_subnet" "private" {
  for_each = local.private_subnets

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  tags              = merge(local.tags, { Name = "${local.name}-private-${each.key}", "fractal:tier" = "private" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each = aws_subnet.public

  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

# One NAT gateway per region (not per AZ): the nodes need the internet to install packages at first boot,
# for SSM and, when the bucket is in another region (topology = "global", not the home region), for S3.
# Peers are reached through the VPC / peering. In the home region (and with topology = "per-region") S3 goes
# through the gateway endpoint, so losing the NAT's AZ does not stop running nodes; in the other regions of
# a global deployment it cuts the nodes off the cluster map and leases until the NAT is back (README
# "Trade-offs").
resource "aws_eip" "nat" {
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.name}-nat" })
}

resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public[local.azs[0]].id
  tags          = merge(local.tags, { Name = local.name })

  depends_on = [aws_internet_gateway.this]
}

# One private route table for all private subnets; the cross-region peering routes are added to it.
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.name}-private" })
}

resource "aws_route" "private_nat" {
  route_table_id         = aws_route_table.private.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this.id
}

resource "aws_route_table_association" "private" {
  for_each = aws_subnet.private

  subnet_id      = each.value.id
  route_table_id = aws_route_table.private.id
}

# S3 traffic (checkpoints, leases, the cluster map) to a bucket IN THIS REGION stays on the AWS network and
# skips the NAT's per-GB fee. A gateway endpoint only reaches same-region buckets: with topology = "global",
# the nodes of the other regions reach the home region's bucket through the NAT gateway (HTTPS; NAT and
# inter-region transfer fees, see README "Cost").
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = merge(local.tags, { Name = "${local.name}-s3" })
}
