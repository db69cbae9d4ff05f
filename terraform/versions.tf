terraform {
  # 1.9: variable validations that refer to other variables (home_region, cross_region_peering).
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
  }
}
