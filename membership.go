package raft

import (
	"errors"
	"fmt"
	"slices"
)

// NodeID identifies a server in a cluster. Zero is never a valid ID: it
// means "none" (no vote, no known leader).
type NodeID uint64

// None is the zero NodeID: no node.
const None NodeID = 0

// Suffrage says whether a server's vote counts.
type Suffrage uint8

const (
	// Voter servers vote in elections and count toward commit quorums.
	Voter Suffrage = iota
	// Learner servers receive the log but neither vote nor count toward
	// quorums. A caught-up learner can be promoted to a voter.
	Learner
)

func (s Suffrage) String() string {
	switch s {
	case Voter:
		return "voter"
	case Learner:
		return "learner"
	}
	return fmt.Sprintf("Suffrage(%d)", uint8(s))
}

// Server is one member of a cluster configuration.
type Server struct {
	ID       NodeID
	Addr     string // transport address; may be empty for in-memory transports
	Suffrage Suffrage
}

// Configuration is the set of servers in a cluster. It is data carried in
// the log (entries of type EntryConfig) and in snapshots; the configuration
// in force on a node is the latest one in its log, committed or not
// (Raft dissertation, section 4.1).
type Configuration struct {
	Servers []Server
}

// Clone returns a deep copy of c.
func (c Configuration) Clone() Configuration {
	return Configuration{Servers: slices.Clone(c.Servers)}
}

// Server returns the member with the given ID.
func (c Configuration) Server(id NodeID) (Server, bool) {
	for _, s := range c.Servers {
		if s.ID == id {
			return s, true
		}
	}
	return Server{}, false
}

// IsVoter reports whether id is a voting member of c.
func (c Configuration) IsVoter(id NodeID) bool {
	s, ok := c.Server(id)
	return ok && s.Suffrage == Voter
}

// Voters returns the IDs of the voting members, in configuration order.
func (c Configuration) Voters() []NodeID {
	ids := make([]NodeID, 0, len(c.Servers))
	for _, s := range c.Servers {
		if s.Suffrage == Voter {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// Validate reports whether c is a well-formed configuration: non-zero unique
// IDs and valid suffrages. An empty configuration is valid (a node waiting
// to join has none).
func (c Configuration) Validate() error {
	seen := make(map[NodeID]bool, len(c.Servers))
	for _, s := range c.Servers {
		if s.ID == None {
			return errors.New("raft: configuration has a server with ID 0")
		}
		if seen[s.ID] {
			return fmt.Errorf("raft: configuration lists server %d twice", s.ID)
		}
		seen[s.ID] = true
		if s.Suffrage != Voter && s.Suffrage != Learner {
			return fmt.Errorf("raft: server %d has invalid suffrage %d", s.ID, s.Suffrage)
		}
	}
	return nil
}

// ConfChangeType names a single-server membership change.
type ConfChangeType uint8

const (
	// AddVoter adds a voting server, or promotes a learner to voter.
	AddVoter ConfChangeType = iota + 1
	// AddLearner adds a non-voting server.
	AddLearner
	// RemoveServer removes a server, voter or learner.
	RemoveServer
)

func (t ConfChangeType) String() string {
	switch t {
	case AddVoter:
		return "AddVoter"
	case AddLearner:
		return "AddLearner"
	case RemoveServer:
		return "RemoveServer"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChange is one single-server membership change (Raft dissertation,
// section 4.2: changing one server at a time keeps every old and new
// majority overlapping).
type ConfChange struct {
	Type ConfChangeType
	ID   NodeID
	Addr string
}

// apply returns the configuration that results from applying cc to c.
func (c Configuration) apply(cc ConfChange) (Configuration, error) {
	if cc.ID == None {
		return c, errors.New("raft: membership change names server 0")
	}
	next := c.Clone()
	i := slices.IndexFunc(next.Servers, func(s Server) bool { return s.ID == cc.ID })
	switch cc.Type {
	case AddVoter, AddLearner:
		suf := Voter
		if cc.Type == AddLearner {
			suf = Learner
		}
		if i < 0 {
			next.Servers = append(next.Servers, Server{ID: cc.ID, Addr: cc.Addr, Suffrage: suf})
			break
		}
		if next.Servers[i].Suffrage == Voter && suf == Learner {
			return c, fmt.Errorf("raft: server %d is a voter; demoting to learner is not supported", cc.ID)
		}
		if next.Servers[i].Suffrage == suf && (cc.Addr == "" || cc.Addr == next.Servers[i].Addr) {
			return c, fmt.Errorf("raft: server %d is already a %s", cc.ID, suf)
		}
		next.Servers[i].Suffrage = suf
		if cc.Addr != "" {
			next.Servers[i].Addr = cc.Addr
		}
	case RemoveServer:
		if i < 0 {
			return c, fmt.Errorf("raft: server %d is not a member", cc.ID)
		}
		next.Servers = slices.Delete(next.Servers, i, i+1)
	default:
		return c, fmt.Errorf("raft: unknown membership change type %d", cc.Type)
	}
	if len(next.Voters()) == 0 {
		return c, errors.New("raft: membership change would leave no voters")
	}
	return next, nil
}

// confEntry is a configuration together with the log index that set it.
type confEntry struct {
	index uint64
	conf  Configuration
}

// confHistory tracks the configurations in the log so that truncating a
// conflicting suffix can restore the previous one.
//
// Invariant: entries are in increasing index order and entries[0] is the
// base configuration (from the snapshot or bootstrap), never removed by
// truncation.
type confHistory struct {
	entries []confEntry
}

func (h *confHistory) latest() confEntry { return h.entries[len(h.entries)-1] }

func (h *confHistory) push(index uint64, c Configuration) {
	h.entries = append(h.entries, confEntry{index: index, conf: c})
}

// truncate drops configurations set at or after index (but never the base).
func (h *confHistory) truncate(index uint64) {
	for len(h.entries) > 1 && h.entries[len(h.entries)-1].index >= index {
		h.entries = h.entries[:len(h.entries)-1]
	}
}

// at returns the configuration in force at index.
func (h *confHistory) at(index uint64) confEntry {
	for i := len(h.entries) - 1; i > 0; i-- {
		if h.entries[i].index <= index {
			return h.entries[i]
		}
	}
	return h.entries[0]
}

// compact forgets configurations older than the one in force at index.
func (h *confHistory) compact(index uint64) {
	base := 0
	for i := range h.entries {
		if h.entries[i].index <= index {
			base = i
		}
	}
	h.entries = h.entries[base:]
}

// reset replaces the whole history with one base configuration.
func (h *confHistory) reset(index uint64, c Configuration) {
	h.entries = []confEntry{{index: index, conf: c}}
}
