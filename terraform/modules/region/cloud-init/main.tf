# The cloud-init user data of a Fractal node: writes the environment, the systemd unit and three scripts,
# then (first boot only) resolves the node id / private IP from the instance metadata, installs Node.js and
# Fractal, and starts fractal.service. The cloud-config is JSON (valid YAML, so valid cloud-config), which
# keeps it exact to render and to parse in tests.
locals {
  templates = "${path.module}/../templates"
  app_dir   = "/opt/fractal/app"
  # ExecStart's program; the test replaces it with `node <repo>/node/bin/fractal.js`.
  fractal_bin = "/usr/bin/node ${local.app_dir}/node/bin/fractal.js"

  unit = templatefile("${local.templates}/fractal.service.tftpl", {
    fractal_bin          = local.fractal_bin
    region               = var.region
    http_port            = var.http_port
    grpc_port            = var.grpc_port
    data_dir             = var.data_dir
    object_store         = var.object_store
    lease_ttl            = var.lease_ttl
    checkpoint_interval  = var.checkpoint_interval
    log_level            = var.log_level
    stop_timeout_seconds = var.stop_timeout_seconds
  })

  env = templatefile("${local.templates}/fractal.env.tftpl", {
    bucket_region = var.bucket_region
    admin_token   = var.admin_token
  })

  install = templatefile("${local.templates}/fractal-install.sh.tftpl", {
    node_major      = var.node_major
    fractal_source  = var.fractal_source
    fractal_version = var.fractal_version
    app_dir         = local.app_dir
  })

  admin = templatefile("${local.templates}/fractal-admin.sh.tftpl", {
    fractal_bin = local.fractal_bin
    http_port   = var.http_port
  })

  cloud_config = {
    write_files = [
      { path = "/etc/fractal/fractal.env", owner = "root:root", permissions = "0600", content = local.env },
      { path = "/etc/systemd/system/fractal.service", owner = "root:root", permissions = "0644", content = local.unit },
      { path = "/usr/local/sbin/fractal-instance-env", owner = "root:root", permissions = "0755", content = file("${local.templates}/fractal-instance-env.sh") },
      { path = "/usr/local/sbin/fractal-install", owner = "root:root", permissions = "0755", content = local.install },
      { path = "/usr/local/sbin/fractal-admin", owner = "root:root", permissions = "0755", content = local.admin },
    ]
    runcmd = [
      ["/usr/local/sbin/fractal-instance-env"],
      ["/usr/local/sbin/fractal-install"],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", "fractal.service"],
    ]
  }
}
