# Internet-facing NLB: TCP on 80 (and TLS on 443 with a certificate) to the nodes' HTTP port. Websockets and
# socket.io long-polling work over plain TCP; source-IP stickiness keeps a long-polling client's requests on
# one node (socket.io's polling transport needs that); health checks are HTTP GET /readyz, which turns 503
# while a node starts or stops gracefully.

resource "aws_lb" "this" {
  name                             = substr(local.name, 0, 32)
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = [for s in aws_subnet.public : s.id]
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
}

resource "aws_lb_target_group" "http" {
  name                 = substr(local.name, 0, 32)
  port                 = local.http_port
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 30
  tags                 = local.tags

  stickiness {
    type    = "source_ip"
    enabled = true
  }

  health_check {
    protocol            = "HTTP"
    port                = "traffic-port"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "node" {
  for_each = aws_instance.node

  target_group_arn = aws_lb_target_group.http.arn
  target_id        = each.value.id
  port             = local.http_port
}

resource "aws_lb_listener" "tcp" {
  load_balancer_arn = aws_lb.this.arn
  port              = local.listener_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.http.arn
  }
}

resource "aws_lb_listener" "tls" {
  count = var.certificate_arn == null ? 0 : 1

  load_balancer_arn = aws_lb.this.arn
  port              = local.tls_port
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.http.arn
  }
}
