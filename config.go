package raft

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config holds a node's settings. Start from DefaultConfig, set ID and
// Peers, and adjust the rest only with a reason.
type Config struct {
	// ID is this node's identity; it must be non-zero and unique.
	ID NodeID
	// Peers is the initial cluster configuration, including this node. It
	// is used only when the node's Storage is empty, to bootstrap a new
	// cluster: every initial member must be started with the same Peers.
	// Leave it empty on a node that will join an existing cluster (it waits
	// to be added by the leader) and on restarts it is ignored.
	Peers []Server

	// TickInterval is the length of one logical clock tick of a Node. The
	// deterministic Core ignores it: its time is the calls to Tick.
	TickInterval time.Duration
	// ElectionTicks is the minimum election timeout in ticks; each timeout
	// is drawn uniformly from [ElectionTicks, 2*ElectionTicks).
	ElectionTicks int
	// HeartbeatTicks is how often a leader sends heartbeats, in ticks. It
	// must be at most ElectionTicks/3 so that, even when 30% of messages
	// are lost, a follower hears from the leader within every timeout.
	HeartbeatTicks int

	// PreVote makes a node check that it could win before it bumps its
	// term (dissertation section 9.6), so a node rejoining after a
	// partition does not depose a healthy leader.
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// majority for an election timeout, and makes followers that hear from
	// a leader ignore vote requests for that long.
	CheckQuorum bool

	// LeaseRead lets a leader answer Read without a heartbeat round while
	// its lease holds: until an election timeout (less a fifth for clock
	// drift) after the send time of the latest heartbeat round a majority
	// acknowledged. It assumes the nodes' tick rates differ by less than
	// that margin. It requires CheckQuorum. Off by default.
	LeaseRead bool

	// MaxSizePerMsg bounds the entry bytes in one AppendEntries message.
	MaxSizePerMsg int
	// MaxInflightMsgs bounds the AppendEntries messages in flight to one
	// follower before acknowledgements (pipelining window).
	MaxInflightMsgs int
	// MaxInflightBytes bounds the entry data bytes in flight to one
	// follower: once that many are unacknowledged, the leader sends it no
	// new entries until acknowledgements free some (one message is
	// always allowed, so a single large entry still goes). It keeps a
	// slow follower from making the leader queue up to MaxInflightMsgs x
	// MaxSizePerMsg bytes for it. Zero means no byte limit; otherwise it
	// must be at least MaxSizePerMsg. DefaultConfig sets 32 MiB.
	MaxInflightBytes int
	// MaxUncommittedBytes bounds the data bytes of entries a leader has
	// appended that are not yet both committed and written to its own
	// Storage: past it, Propose fails at once with ErrProposalDropped
	// (nothing is appended) until they catch up. While the leader's disk
	// stalls or a quorum is unreachable this keeps it from growing its
	// log and its write queue without limit. One
	// proposal is always accepted when nothing is uncommitted, however
	// large. Zero means no limit. DefaultConfig sets 64 MiB.
	MaxUncommittedBytes int
	// MaxApplyBatchBytes bounds the committed entry bytes handed to the
	// state machine in one batch.
	MaxApplyBatchBytes int

	// SnapshotThreshold is the number of applied entries since the last
	// snapshot after which a Node takes a new one; zero disables
	// automatic snapshots.
	SnapshotThreshold uint64
	// SnapshotChunkSize bounds the bytes of snapshot data in one message
	// when a leader streams a snapshot to a lagging follower.
	SnapshotChunkSize int
	// TrailingEntries is how many entries before a snapshot's index are
	// kept in the log so slightly lagging followers catch up from the log
	// instead of a snapshot.
	TrailingEntries uint64

	// Logger receives the node's log records. Nil discards them.
	Logger *slog.Logger
	// Observer, if set, is called from the node's loop on every change of
	// role, term or known leader. It must return quickly.
	Observer func(Observation)
}

// Observation reports a change of a node's role, term or leader.
type Observation struct {
	ID     NodeID
	Role   Role
	Term   uint64
	Leader NodeID
}

// DefaultConfig returns a Config with sensible settings for a cluster on a
// local network: 10ms ticks, a 200-400ms election timeout, heartbeats every
// 30ms, pre-vote and check-quorum on. The caller sets ID and Peers.
func DefaultConfig() Config {
	return Config{
		TickInterval:        10 * time.Millisecond,
		ElectionTicks:       20,
		HeartbeatTicks:      3,
		PreVote:             true,
		CheckQuorum:         true,
		MaxSizePerMsg:       1 << 20,
		MaxInflightMsgs:     256,
		MaxInflightBytes:    32 << 20,
		MaxUncommittedBytes: 64 << 20,
		MaxApplyBatchBytes:  4 << 20,
		SnapshotThreshold:   8192,
		SnapshotChunkSize:   1 << 20,
		TrailingEntries:     1024,
	}
}

// Validate reports the first setting that makes no sense, with a message
// that says how to fix it.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("raft: config: "+format, args...)) }
	if c.ID == None {
		bad("ID must be non-zero")
	}
	if c.TickInterval <= 0 {
		bad("TickInterval must be positive, got %v", c.TickInterval)
	}
	if c.ElectionTicks <= 0 {
		bad("ElectionTicks must be positive, got %d", c.ElectionTicks)
	}
	if c.HeartbeatTicks <= 0 {
		bad("HeartbeatTicks must be positive, got %d", c.HeartbeatTicks)
	}
	if c.HeartbeatTicks > 0 && c.ElectionTicks > 0 && c.HeartbeatTicks*3 > c.ElectionTicks {
		bad("HeartbeatTicks (%d) must be at most ElectionTicks/3 (ElectionTicks is %d) so heartbeats survive message loss", c.HeartbeatTicks, c.ElectionTicks)
	}
	if c.LeaseRead && !c.CheckQuorum {
		bad("LeaseRead requires CheckQuorum (followers must ignore candidates while the lease holds)")
	}
	if c.MaxSizePerMsg <= 0 {
		bad("MaxSizePerMsg must be positive, got %d", c.MaxSizePerMsg)
	}
	if c.MaxInflightMsgs <= 0 {
		bad("MaxInflightMsgs must be positive, got %d", c.MaxInflightMsgs)
	}
	if c.MaxInflightBytes < 0 || (c.MaxInflightBytes > 0 && c.MaxInflightBytes < c.MaxSizePerMsg) {
		bad("MaxInflightBytes must be 0 (no limit) or at least MaxSizePerMsg (%d), got %d", c.MaxSizePerMsg, c.MaxInflightBytes)
	}
	if c.MaxUncommittedBytes < 0 {
		bad("MaxUncommittedBytes must be 0 (no limit) or positive, got %d", c.MaxUncommittedBytes)
	}
	if c.SnapshotChunkSize <= 0 {
		bad("SnapshotChunkSize must be positive, got %d", c.SnapshotChunkSize)
	}
	if c.MaxApplyBatchBytes <= 0 {
		bad("MaxApplyBatchBytes must be positive, got %d", c.MaxApplyBatchBytes)
	}
	if len(c.Peers) > 0 {
		conf := Configuration{Servers: c.Peers}
		if err := conf.Validate(); err != nil {
			bad("Peers: %v", err)
		}
		if _, ok := conf.Server(c.ID); !ok && c.ID != None {
			bad("Peers must include this node (ID %d)", c.ID)
		}
		if len(conf.Voters()) == 0 {
			bad("Peers must include at least one voter")
		}
	}
	return errors.Join(errs...)
}
