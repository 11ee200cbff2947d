package worker

import "github.com/cube-orch/cube/api"

// apiService is what the agent's HTTP API serves: the Worker and, in a
// gossip pool, its keyring (api.WorkerKeyring), which the managers call to
// rotate the gossip key.
type apiService struct {
	*Worker
	ring api.GossipKeyring // nil when the worker runs alone
}

// LocalGossipKeyring is the worker's gossip keyring; nil when alone.
func (s apiService) LocalGossipKeyring() api.GossipKeyring { return s.ring }

// apiService returns what the agent's API serves. The ring is set only
// when there is a pool: a nil *cluster.Pool in the interface would not
// compare equal to nil.
func (a *Agent) apiService() apiService {
	s := apiService{Worker: a.w}
	if a.pool != nil {
		s.ring = a.pool
	}
	return s
}
