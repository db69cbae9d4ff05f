output "user_data" {
  description = "The cloud-init user data (#cloud-config, JSON). Sensitive: it holds the admin token."
  value       = "#cloud-config\n${jsonencode(local.cloud_config)}"
  sensitive   = true
}

output "unit" {
  description = "The rendered fractal.service (no secrets in it)."
  value       = local.unit
}

output "fractal_bin" {
  description = "The command ExecStart runs."
  value       = local.fractal_bin
}
