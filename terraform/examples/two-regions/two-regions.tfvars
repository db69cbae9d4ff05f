# terraform apply -var-file=examples/two-regions/two-regions.tfvars   (from terraform/, with TF_VAR_admin_token set)
topology         = "global"
regions          = ["us-east-1", "eu-west-1"]
home_region      = "us-east-1"
nodes_per_region = 3
instance_type    = "t3.medium"

fractal_source  = "https://github.com/example-org/fractal-chat.git"
fractal_version = "v0.1.0"

lease_ttl           = "10s"
checkpoint_interval = "1s"

project       = "fractal-chat"
vpc_cidr_base = "10.64.0.0/12"
tags          = { Environment = "staging", Owner = "chat-team" }
