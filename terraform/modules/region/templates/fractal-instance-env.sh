#!/bin/bash
# Writes /etc/fractal/instance.env with this instance's node id and private IP, read from the instance
# metadata (IMDSv2): the node id is the instance tag FractalNodeId (stable across instance replacement, so the
# node keeps its place in the cluster map), falling back to the instance id; the IP is the primary private IPv4.
set -euo pipefail
imds=http://169.254.169.254/latest
for attempt in $(seq 1 30); do
  if token=$(curl -fsS -X PUT "$imds/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300"); then break; fi
  sleep 2
done
md() { curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/$1"; }
ip=$(md local-ipv4)
id=$(md tags/instance/FractalNodeId 2>/dev/null || md instance-id)
if ! [[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$ ]]; then
  echo "fractal-instance-env: node id '$id' is not a valid Fractal node id" >&2
  exit 1
fi
install -d -m 0755 /etc/fractal
tmp=$(mktemp /etc/fractal/instance.env.XXXXXX)
printf 'FRACTAL_INSTANCE_NODE_ID=%s\nFRACTAL_INSTANCE_PRIVATE_IP=%s\n' "$id" "$ip" > "$tmp"
chmod 0644 "$tmp"
mv "$tmp" /etc/fractal/instance.env
echo "fractal-instance-env: node $id at $ip"
