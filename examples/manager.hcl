# Agent config of one Cube manager: cube manager --config /etc/cube/manager.hcl
# One file per node, as Nomad's and Consul's agents take. Flags and CUBE_*
# environment variables override what is set here.

id       = "m1"                # stable raft server ID; keep it across restarts
data_dir = "/var/lib/cube/manager"

# Listen on every interface; advertise this machine's address to the others.
bind_addr      = "0.0.0.0"
advertise_addr = "10.0.0.11"   # an IP or a host name

ports {
  http   = 5556                # manager API (clients, workers' reports)
  raft   = 6556
  gossip = 6557
}

# Per-address overrides of advertise_addr, e.g. behind a NAT:
# advertise {
#   http   = "cube-m1.example.com:5556"
#   raft   = "10.0.0.11:6556"
#   gossip = "10.0.0.11:6557"
# }

# The initial voters, every manager's ID=advertised raft address, this one
# included; the same list on every manager. Ignored once raft state exists.
peers = ["m1=10.0.0.11:6556", "m2=10.0.0.12:6556", "m3=10.0.0.13:6556"]

# Gossip addresses of the other managers.
join = ["10.0.0.12:6557", "10.0.0.13:6557"]

log_level = "info"
