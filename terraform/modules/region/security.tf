# Security groups. Clients reach the nodes only through the NLB: the NLB has its own security group (NLBs
# support security groups since 2023) open to client_cidrs on the listener ports, and the nodes accept the
# HTTP port only from that security group (which also covers the health checks; AWS documents that this
# works with client IP preservation on). gRPC is open only between the region's nodes (self-referencing rule)
# and from the peered regions' VPC CIDRs. SSH exists only when ssh_enabled.

resource "aws_security_group" "lb" {
  name        = "${local.name}-lb"
  description = "Fractal NLB: client listeners"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-lb" })
}

resource "aws_security_group" "node" {
  name        = "${local.name}-node"
  description = "Fractal nodes: HTTP from the NLB, gRPC from peers"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-node" })
}

# --- NLB ---------------------------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "lb_clients" {
  for_each = { for pair in setproduct(var.client_cidrs, local.lb_ports) : "${pair[0]}:${pair[1]}" => { cidr = pair[0], port = pair[1] } }

  security_group_id = aws_security_group.lb.id
  description       = "clients to the NLB listener"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_egress_rule" "lb_to_nodes" {
  security_group_id            = aws_security_group.lb.id
  description                  = "NLB to the nodes' HTTP port (traffic and /readyz health checks)"
  ip_protocol                  = "tcp"
  from_port                    = local.http_port
  to_port                      = local.http_port
  referenced_security_group_id = aws_security_group.node.id
}

# --- nodes: ingress ------------------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "node_http_from_lb" {
  security_group_id            = aws_security_group.node.id
  description                  = "HTTP / socket.io from the NLB only"
  ip_protocol                  = "tcp"
  from_port                    = local.http_port
  to_port                      = local.http_port
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_vpc_security_group_ingress_rule" "node_grpc_self" {
  security_group_id            = aws_security_group.node.id
  description                  = "gRPC between the region's nodes"
  ip_protocol                  = "tcp"
  from_port                    = local.grpc_port
  to_port                      = local.grpc_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_ingress_rule" "node_grpc_peers" {
  for_each = toset(var.peer_cidrs)

  security_group_id = aws_security_group.node.id
  description       = "gRPC from a peered region's VPC"
  ip_protocol       = "tcp"
  from_port         = local.grpc_port
  to_port           = local.grpc_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "node_ssh" {
  count = var.ssh_enabled ? 1 : 0

  security_group_id = aws_security_group.node.id
  description       = "SSH (ssh_enabled)"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.ssh_cidr

  lifecycle {
    precondition {
      condition     = var.ssh_cidr != null && var.ssh_cidr != "0.0.0.0/0"
      error_message = "ssh_enabled needs ssh_cidr: a specific network, not 0.0.0.0/0."
    }
  }
}

# --- nodes: egress -------------------------------------------------------------------------------------------

# HTTPS out: S3 (gateway endpoint), SSM, and the first-boot install (NodeSource, npm, git).
resource "aws_vpc_security_group_egress_rule" "node_https" {
  security_group_id = aws_security_group.node.id
  description       = "HTTPS: S3, SSM, package installs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# HTTP out: Ubuntu's apt mirrors (packages are signed).
resource "aws_vpc_security_group_egress_rule" "node_http_apt" {
  security_group_id = aws_security_group.node.id
  description       = "HTTP: apt mirrors"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "node_grpc_self" {
  security_group_id            = aws_security_group.node.id
  description                  = "gRPC to the region's nodes"
  ip_protocol                  = "tcp"
  from_port                    = local.grpc_port
  to_port                      = local.grpc_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_egress_rule" "node_grpc_peers" {
  for_each = toset(var.peer_cidrs)

  security_group_id = aws_security_group.node.id
  description       = "gRPC to a peered region's VPC"
  ip_protocol       = "tcp"
  from_port         = local.grpc_port
  to_port           = local.grpc_port
  cidr_ipv4         = each.value
}
