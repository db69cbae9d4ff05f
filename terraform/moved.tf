# The buckets used to live in modules/region (one per region, before `topology` existed). These blocks move
# them into modules/bucket without recreating them, so a deployment made before then keeps its buckets and
# chat history when it sets topology = "per-region" (which is what it was). With topology = "global" only the
# home region keeps its bucket: the other regions' buckets would move to bucket modules that do not exist and
# be planned for destruction (refused while non-empty and force_destroy is false). Two clusters' maps and
# rooms cannot be merged by Terraform; see README "Moving from per-region to global".

moved {
  from = module.region_us_east_1[0].aws_s3_bucket.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket.objects
}

moved {
  from = module.region_us_east_1[0].aws_s3_bucket_ownership_controls.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket_ownership_controls.objects
}

moved {
  from = module.region_us_east_1[0].aws_s3_bucket_public_access_block.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket_public_access_block.objects
}

moved {
  from = module.region_us_east_1[0].aws_s3_bucket_versioning.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket_versioning.objects
}

moved {
  from = module.region_us_east_1[0].aws_s3_bucket_server_side_encryption_configuration.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket_server_side_encryption_configuration.objects
}

moved {
  from = module.region_us_east_1[0].aws_s3_bucket_lifecycle_configuration.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket_lifecycle_configuration.objects
}

moved {
  from = module.region_us_east_1[0].aws_s3_bucket_policy.objects
  to   = module.bucket_us_east_1[0].aws_s3_bucket_policy.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket_ownership_controls.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket_ownership_controls.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket_public_access_block.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket_public_access_block.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket_versioning.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket_versioning.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket_server_side_encryption_configuration.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket_server_side_encryption_configuration.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket_lifecycle_configuration.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket_lifecycle_configuration.objects
}

moved {
  from = module.region_us_west_2[0].aws_s3_bucket_policy.objects
  to   = module.bucket_us_west_2[0].aws_s3_bucket_policy.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket_ownership_controls.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket_ownership_controls.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket_public_access_block.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket_public_access_block.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket_versioning.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket_versioning.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket_server_side_encryption_configuration.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket_server_side_encryption_configuration.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket_lifecycle_configuration.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket_lifecycle_configuration.objects
}

moved {
  from = module.region_eu_west_1[0].aws_s3_bucket_policy.objects
  to   = module.bucket_eu_west_1[0].aws_s3_bucket_policy.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket_ownership_controls.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket_ownership_controls.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket_public_access_block.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket_public_access_block.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket_versioning.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket_versioning.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket_server_side_encryption_configuration.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket_server_side_encryption_configuration.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket_lifecycle_configuration.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket_lifecycle_configuration.objects
}

moved {
  from = module.region_ap_southeast_1[0].aws_s3_bucket_policy.objects
  to   = module.bucket_ap_southeast_1[0].aws_s3_bucket_policy.objects
}
