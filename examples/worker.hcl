# Agent config of one Cube worker: cube worker --config /etc/cube/worker.hcl
# One file per node, as Nomad's and Consul's agents take. Flags and CUBE_*
# environment variables override what is set here.

name     = "w1"                # stable across restarts
data_dir = "/var/lib/cube/worker"

# Listen on every interface; advertise this machine's address to the others.
bind_addr      = "0.0.0.0"
advertise_addr = "10.0.0.21"   # an IP or a host name

ports {
  http   = 5555                # worker API, dialled by the managers
  gossip = 6555                # without a gossip port the worker runs alone
}

# Per-address overrides of advertise_addr:
# advertise {
#   http   = "10.0.0.21:5555"
#   gossip = "10.0.0.21:6555"
# }

# Gossip addresses of the managers.
join = ["10.0.0.11:6557", "10.0.0.12:6557", "10.0.0.13:6557"]

# Capacity offered to tasks; 0 or absent means the machine's.
# cpu    = 4
# memory = 8589934592          # bytes
# disk   = 107374182400        # bytes

# What tasks may ask for beyond an ordinary container. Nothing by default:
# a task asking for privileged mode, the host network, a host mount or an
# added capability is placed only on a worker that allows it.
# allow_privileged   = false
# allow_host_network = false
# allow_mounts       = ["/srv/data"]   # host path prefixes tasks may bind
# allow_caps         = ["NET_ADMIN"]   # or ["ALL"]

# Labels describing this worker (--label), matched by tasks' Constraints
# ("zone==a") and Prefer; shown by cube node.
# labels = ["zone=a", "disk=ssd"]

keep_ended = "24h"             # how long an ended task's container stays for cube logs
stop_grace = "10s"
log_level  = "info"
log_format = "text"            # or "json": one JSON object a line, for a log collector

# Security (on by default: without these the node refuses to start, unless
# insecure = true). Certificates from cube tls ca create / cube tls cert create
# --worker --name <this node's name>; the key from cube keygen, the same on every node.
tls {
  ca_file   = "/etc/cube/tls/cube-ca.pem"
  cert_file = "/etc/cube/tls/worker-w1.pem"
  key_file  = "/etc/cube/tls/worker-w1-key.pem"
}
encrypt = "REPLACE-with-the-output-of-cube-keygen"
