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

# A task Scheduled on a worker this long without starting is sent again;
# twice this long, it is placed again. Keep it above the workers' start_timeout.
scheduled_timeout = "10m"

log_level  = "info"
log_format = "text" # or "json": one JSON object a line, for a log collector

# Garbage collection and bounds (these are the defaults).
gc_interval         = "5m"   # how often the leader collects
task_gc_threshold   = "4h"   # a finished task goes this long after it ended
worker_gc_threshold = "24h"  # a worker dead or gone this long (with no live task) goes
max_tasks           = 200000 # state quota: beyond it POST /tasks answers 429
max_event_streams   = 64     # GET /events streams per manager

# Security (on by default: without these the node refuses to start, unless
# insecure = true). Certificates from cube tls ca create / cube tls cert create
# --manager --name <this node's id>; the key from cube keygen, the same on every node.
tls {
  ca_file   = "/etc/cube/tls/cube-ca.pem"
  cert_file = "/etc/cube/tls/manager-m1.pem"
  key_file  = "/etc/cube/tls/manager-m1-key.pem"
}
encrypt = "REPLACE-with-the-output-of-cube-keygen"

# The operator token the cluster starts with (cube keygen --token > FILE); the
# first leader stores its hash if the cluster has no token yet.
bootstrap_token_file = "/etc/cube/operator.token"
