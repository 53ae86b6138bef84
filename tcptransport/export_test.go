package tcptransport

import "github.com/raftgo/raft"

// MaxLearnedPeers exposes maxLearnedPeers to the external tests.
const MaxLearnedPeers = maxLearnedPeers

// DirectWrites returns how many direct writes Send made to peer id, and how
// many of them the socket took only part of.
func (t *Transport) DirectWrites(id raft.NodeID) (all, partial uint64) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p := t.peers[id]
	if p == nil {
		return 0, 0
	}
	return p.stat.direct.Load(), p.stat.partial.Load()
}
