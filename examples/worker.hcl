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

keep_ended = "24h"             # how long an ended task's container stays for cube logs
stop_grace = "10s"
log_level  = "info"
