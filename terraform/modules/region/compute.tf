# The nodes: one launch template (same user data for every node of the region: each node learns its id and
# address from the instance metadata) and one instance per node id.
#
# Fixed instances rather than an auto-scaling group: a Fractal node id is its identity in the cluster map
# (rooms are placed on the ring by id), so ids must survive instance replacement. Instances are keyed by
# stable ids (<region>-n1, ...) passed as the tag FractalNodeId; a replaced instance comes back with the same
# id (and rebuilds its rooms from the object store), where an ASG would mint a new node every time and leave
# the old one `down` in the map. EC2's automatic recovery (on by default) restarts a failed host's instance
# with its id, IP and disk.

data "aws_ssm_parameter" "ubuntu" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/canonical/ubuntu/server/24.04/stable/current/${var.architecture}/hvm/ebs-gp3/ami-id"
}

module "cloud_init" {
  source = "./cloud-init"

  region              = var.region
  bucket_region       = var.bucket.region
  object_store        = local.object_store
  http_port           = local.http_port
  grpc_port           = local.grpc_port
  data_dir            = local.data_dir
  lease_ttl           = var.lease_ttl
  checkpoint_interval = var.checkpoint_interval
  log_level           = var.log_level
  admin_token         = var.admin_token
  fractal_source      = var.fractal_source
  fractal_version     = var.fractal_version
}

resource "aws_launch_template" "node" {
  name_prefix            = "${local.name}-"
  description            = "Fractal Chat node (${var.fractal_source} @ ${var.fractal_version})"
  image_id               = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.ubuntu[0].insecure_value
  instance_type          = var.instance_type
  key_name               = var.ssh_enabled ? var.ssh_key_name : null
  vpc_security_group_ids = [aws_security_group.node.id]
  user_data              = base64encode(module.cloud_init.user_data)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  # IMDSv2 only; instance tags in the metadata (the node id is the tag FractalNodeId).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  # Ubuntu's root device.
  block_device_mappings {
    device_name = "/dev/sda1"

    ebs {
      volume_size           = var.root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${local.name}-node" })
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = !var.ssh_enabled || var.ssh_key_name != null
      error_message = "ssh_enabled needs ssh_key_name."
    }
  }
}

resource "aws_instance" "node" {
  for_each = local.nodes

  subnet_id = aws_subnet.private[each.value.az].id

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  tags = merge(local.tags, { Name = each.key, FractalNodeId = each.key })

  lifecycle {
    # A new launch template version (new fractal_version, AMI, settings) applies to instances created from
    # now on; existing nodes are replaced deliberately, one at a time, after draining them (README "Rolling
    # restart and upgrade"), never all at once by an apply.
    ignore_changes = [launch_template, ami, user_data, user_data_base64]
  }
}
