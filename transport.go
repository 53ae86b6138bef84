package raft

import "fmt"

// MessageType names a Raft message.
type MessageType uint8

const (
	// MsgApp is AppendEntries: Index and LogTerm name the entry before
	// Entries, Commit is the leader's commit index.
	MsgApp MessageType = iota + 1
	// MsgAppResp answers MsgApp (and MsgSnap). On success Index is the
	// highest index the follower now holds in agreement with the leader.
	// On rejection Index is the rejected previous index and RejectHint /
	// LogTerm carry the conflict hint: the follower's term at that index
	// and the first index of that term (or its last index + 1 and term 0
	// when its log is too short).
	MsgAppResp
	// MsgVote is RequestVote: Index and LogTerm describe the candidate's
	// last entry. Context is 1 for an election forced by leadership
	// transfer.
	MsgVote
	// MsgVoteResp answers MsgVote; Reject is false when the vote is granted.
	MsgVoteResp
	// MsgPreVote asks whether the receiver would vote for the sender in the
	// next term, without changing any state (dissertation section 9.6).
	MsgPreVote
	// MsgPreVoteResp answers MsgPreVote.
	MsgPreVoteResp
	// MsgHeartbeat asserts leadership. Commit is min(follower match,
	// leader commit); Context carries the leader's read sequence number.
	MsgHeartbeat
	// MsgHeartbeatResp answers MsgHeartbeat, echoing Context.
	MsgHeartbeatResp
	// MsgSnap is InstallSnapshot: Snapshot describes it and SnapshotData
	// carries its bytes (filled in by the runtime from Storage). A large
	// snapshot travels as several MsgSnap chunks: SnapshotOffset is the
	// position of SnapshotData in the whole, and SnapshotDone marks the
	// last chunk.
	MsgSnap
	// MsgTimeoutNow tells the receiver to start an election at once
	// (leadership transfer).
	MsgTimeoutNow
	// MsgReadIndex is a follower asking the leader for a read index on
	// behalf of a local Read; Context identifies the request.
	MsgReadIndex
	// MsgReadIndexResp answers MsgReadIndex: Index is the read index, or
	// Reject is set when the leader could not serve it.
	MsgReadIndexResp
	// MsgSnapAck acknowledges snapshot chunks: SnapshotOffset is the
	// number of bytes received in order so far; Reject asks the sender to
	// restart the transfer from offset 0. It is handled by the Node
	// runtime, not the Core.
	MsgSnapAck
	msgTypeEnd // sentinel for validation
)

var msgTypeNames = [...]string{
	MsgApp: "MsgApp", MsgAppResp: "MsgAppResp", MsgVote: "MsgVote",
	MsgVoteResp: "MsgVoteResp", MsgPreVote: "MsgPreVote",
	MsgPreVoteResp: "MsgPreVoteResp", MsgHeartbeat: "MsgHeartbeat",
	MsgHeartbeatResp: "MsgHeartbeatResp", MsgSnap: "MsgSnap",
	MsgTimeoutNow: "MsgTimeoutNow", MsgReadIndex: "MsgReadIndex",
	MsgReadIndexResp: "MsgReadIndexResp", MsgSnapAck: "MsgSnapAck",
}

func (t MessageType) String() string {
	if t > 0 && t < msgTypeEnd {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Message is the unit exchanged between nodes. Which fields mean something
// depends on Type (see the MessageType constants). Messages handed to a
// Transport and their Entries are never modified afterwards by the sender,
// and must not be modified by the receiver.
type Message struct {
	Type       MessageType
	From       NodeID
	To         NodeID
	Term       uint64
	LogTerm    uint64
	Index      uint64
	Commit     uint64
	Reject     bool
	RejectHint uint64
	Context    uint64
	Entries    []Entry
	// Snapshot, SnapshotOffset, SnapshotData and SnapshotDone are set on
	// MsgSnap (and SnapshotOffset on MsgSnapAck) only.
	Snapshot       SnapshotMeta
	SnapshotOffset uint64
	SnapshotData   []byte
	SnapshotDone   bool
}

func (m Message) String() string {
	return fmt.Sprintf("%s %d->%d term=%d logterm=%d index=%d commit=%d reject=%t hint=%d ctx=%d ents=%d",
		m.Type, m.From, m.To, m.Term, m.LogTerm, m.Index, m.Commit, m.Reject, m.RejectHint, m.Context, len(m.Entries))
}

// Transport carries messages between the nodes of a cluster. A Transport
// value belongs to one node.
//
// Delivery is best-effort: messages may be lost, duplicated, delayed or
// reordered, and Raft copes with all of it. What a Transport must never do
// is block the caller of Send for long, corrupt a message, or deliver a
// message to a node other than its To.
type Transport interface {
	// Start begins delivering messages addressed to this node by calling
	// deliver, which may be called from any goroutine and does not block.
	// Start is called once, before any Send.
	Start(deliver func(Message)) error
	// Send queues msgs for delivery and returns without waiting for the
	// network. The transport must not modify msgs or keep the slice itself
	// (it may keep the Messages it holds).
	Send(msgs []Message)
	// SetPeers tells the transport the current cluster members and their
	// addresses. It is called before Start and whenever the configuration
	// changes.
	SetPeers(servers []Server)
	// Close stops delivery and releases every resource. After Close, Send
	// drops messages.
	Close() error
}

// InlineDeliverer is an optional interface for a Transport. The node
// calls StartInline instead of Start, and may then handle a delivered
// message on the goroutine that delivers it, while the node is not busy
// with anything else: it steps the message, writes to Storage if Storage
// has been answering within microseconds, and calls Send with the replies,
// all before deliver returns. That spares a goroutine hand-off on the hop,
// the largest part of a message's latency on a loaded machine. deliver
// still never waits for the node: when the node is busy the message is
// queued, as for any transport.
//
// deliver's more argument says that the caller holds further messages,
// already received, that it will deliver right after this one; the node
// then queues this one, to handle them all together.
//
// Implement it only if deliver is called from goroutines that can afford
// that work and that hold no lock Send, SetPeers or Close takes.
type InlineDeliverer interface {
	Transport
	StartInline(deliver func(m Message, more bool)) error
}
