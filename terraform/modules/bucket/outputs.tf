output "bucket" {
  description = "What the region modules need: the bucket's name, ARN and region (the nodes' AWS_REGION)."
  value = {
    name   = aws_s3_bucket.objects.bucket
    arn    = aws_s3_bucket.objects.arn
    region = var.region
  }
}

output "region" {
  description = "The bucket's region."
  value       = var.region
}
