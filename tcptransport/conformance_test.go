package tcptransport_test

import (
	"crypto/tls"
	"slices"
	"testing"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"github.com/raftgo/raft/testing/transporttest"
)

// tcpCluster is a transporttest.Cluster of TCP transports on loopback. The
// first transport of each node is created up front so every address is
// known; later ones (restarts) listen on the same address again.
type tcpCluster struct {
	t     testing.TB
	cfg   func(raft.NodeID) tcptransport.Config
	addrs map[raft.NodeID]string
	fresh map[raft.NodeID]*tcptransport.Transport
	peers []raft.Server
}

func newTCPCluster(t *testing.T, ids []raft.NodeID, cfg func(raft.NodeID) tcptransport.Config) *tcpCluster {
	c := &tcpCluster{t: t, cfg: cfg, addrs: map[raft.NodeID]string{}, fresh: map[raft.NodeID]*tcptransport.Transport{}}
	for _, id := range ids {
		tr := listen(t, "", cfg(id))
		c.fresh[id] = tr
		c.addrs[id] = tr.Addr().String()
		c.peers = append(c.peers, raft.Server{ID: id, Addr: c.addrs[id]})
	}
	t.Cleanup(func() {
		for _, tr := range c.fresh {
			tr.Close()
		}
	})
	return c
}

func (c *tcpCluster) Peers() []raft.Server { return slices.Clone(c.peers) }
func (c *tcpCluster) PreservesOrder() bool { return true }

func (c *tcpCluster) Transport(id raft.NodeID) raft.Transport {
	if tr := c.fresh[id]; tr != nil {
		delete(c.fresh, id)
		return tr
	}
	return listen(c.t, c.addrs[id], c.cfg(id))
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, ids []raft.NodeID) transporttest.Cluster {
		return newTCPCluster(t, ids, func(id raft.NodeID) tcptransport.Config { return testConfig(id, nil) })
	})
}

func TestConformanceTLS(t *testing.T) {
	ca := newCA(t, clusterID)
	certs := map[raft.NodeID]*tls.Config{}
	transporttest.Run(t, func(t *testing.T, ids []raft.NodeID) transporttest.Cluster {
		return newTCPCluster(t, ids, func(id raft.NodeID) tcptransport.Config {
			if certs[id] == nil {
				certs[id] = nodeTLS(t, ca, id)
			}
			cfg := testConfig(id, nil)
			cfg.TLS = certs[id]
			return cfg
		})
	})
}
