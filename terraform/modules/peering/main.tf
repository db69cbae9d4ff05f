# Inter-region VPC peering between two Fractal regions, with routes between their private subnets. AWS
# encrypts inter-region peering traffic; the nodes' security groups admit gRPC from the peer's VPC CIDR
# (modules/region, peer_cidrs). The requester and accepter are the two regions' aws providers.

resource "aws_vpc_peering_connection" "this" {
  provider = aws.requester

  vpc_id      = var.requester.vpc_id
  peer_vpc_id = var.accepter.vpc_id
  peer_region = var.accepter.region
  auto_accept = false
  tags        = merge(var.tags, { Name = var.name, Side = "requester" })
}

resource "aws_vpc_peering_connection_accepter" "this" {
  provider = aws.accepter

  vpc_peering_connection_id = aws_vpc_peering_connection.this.id
  auto_accept               = true
  tags                      = merge(var.tags, { Name = var.name, Side = "accepter" })
}

resource "aws_route" "requester_to_accepter" {
  provider = aws.requester

  route_table_id            = var.requester.private_route_table_id
  destination_cidr_block    = var.accepter.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.this.id

  depends_on = [aws_vpc_peering_connection_accepter.this]
}

resource "aws_route" "accepter_to_requester" {
  provider = aws.accepter

  route_table_id            = var.accepter.private_route_table_id
  destination_cidr_block    = var.requester.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.this.id

  depends_on = [aws_vpc_peering_connection_accepter.this]
}
