terraform {
  # No providers: this module only renders text, so `terraform console`/`apply` can evaluate it offline
  # (test/terraform/terraform.test.ts renders the user data exactly as an instance receives it).
  required_version = ">= 1.6"
}
