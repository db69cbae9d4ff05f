# The nodes' identity: a role and instance profile whose only inline policy is the object store bucket it
# is given (var.bucket: the region's own bucket with topology = "per-region", the home region's shared bucket
# with topology = "global"; see modules/bucket), plus SSM when ssm_enabled.

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${substr(local.name, 0, 32)}-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

# Exactly what the S3 object store does (shards/object-store-s3.ts): list, get (and head), put (also the
# multipart parts of large objects and the conditional writes of the map), delete, and abort a failed
# multipart upload. Nothing outside this bucket.
data "aws_iam_policy_document" "objects" {
  statement {
    sid       = "ListTheBucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket.arn]
  }

  statement {
    sid       = "ReadWriteObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket.arn}/*"]
  }
}

resource "aws_iam_role_policy" "objects" {
  name   = "fractal-object-store"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.objects.json
}

# SSM Session Manager / Run Command (rolling restarts, `sudo fractal-admin ...`) without SSH.
resource "aws_iam_role_policy_attachment" "ssm" {
  count = var.ssm_enabled ? 1 : 0

  role       = aws_iam_role.node.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name_prefix = "${substr(local.name, 0, 32)}-"
  role        = aws_iam_role.node.name
  tags        = local.tags
}
