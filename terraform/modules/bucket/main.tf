# A Fractal object store bucket: checkpoints (manifests + segments), the cluster map, leases, the auth secret.
# Versioned, encrypted (SSE-S3), private, TLS only. The lifecycle rule only expires NONCURRENT versions:
# segments are immutable objects referenced by manifests (Fractal deletes replaced ones itself after
# --checkpoint-retention), so expiring current objects by age would corrupt rooms.
#
# Its own module, so that one region can hold the bucket every region uses (topology = "global") without the
# region modules depending on each other; with topology = "per-region" every region gets one of these.
locals {
  name = "${var.project}-${var.region}"
  tags = merge(var.tags, { "fractal:region" = var.region })
}

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

# Only TLS requests (nodes of other regions reach the bucket through their NAT gateway, over HTTPS).
resource "aws_s3_bucket_policy" "objects" {
  bucket = aws_s3_bucket.objects.id
  policy = data.aws_iam_policy_document.tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.objects]
}

data "aws_iam_policy_document" "tls_only" {
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
