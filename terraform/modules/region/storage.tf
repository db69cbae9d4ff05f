# The region's object store: checkpoints (manifests + segments), the cluster map, leases, the auth secret.
# Versioned, encrypted (SSE-S3), private. The lifecycle rule only expires NONCURRENT versions: segments are
# immutable objects referenced by manifests (Fractal deletes replaced ones itself after
# --checkpoint-retention), so expiring current objects by age would corrupt rooms.

resource "aws_s3_bucket" "objects" {
  bucket_prefix = "${local.name}-"
  force_destroy = var.force_destroy
  tags          = merge(local.tags, { Name = "${local.name}-objects" })
}

resource "aws_s3_bucket_ownership_controls" "objects" {
  bucket = aws_s3_bucket.objects.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "objects" {
  bucket = aws_s3_bucket.objects.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "objects" {
  bucket = aws_s3_bucket.objects.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "objects" {
  bucket = aws_s3_bucket.objects.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "objects" {
  bucket = aws_s3_bucket.objects.id

  # Versioning must be on before noncurrent-version rules mean anything.
  depends_on = [aws_s3_bucket_versioning.objects]

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    # Whole bucket: only versions that are no longer current (overwritten manifests, leases and maps,
    # deleted segments) expire; current objects never do.
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    # Delete markers left alone once their noncurrent versions are gone.
    expiration {
      expired_object_delete_marker = true
    }

    # Parts of multipart uploads (large snapshots) that never completed.
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# Only TLS requests.
resource "aws_s3_bucket_policy" "objects" {
  bucket = aws_s3_bucket.objects.id
  policy = data.aws_iam_policy_document.bucket_tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.objects]
}

data "aws_iam_policy_document" "bucket_tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.objects.arn, "${aws_s3_bucket.objects.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# --- the nodes' identity ---------------------------------------------------------------------------------

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
    resources = [aws_s3_bucket.objects.arn]
  }

  statement {
    sid       = "ReadWriteObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.objects.arn}/*"]
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
