package raft

import (
	"errors"
	"io"
	"time"
)

// Snapshot transfer in the Node runtime.
//
// The Core asks for a snapshot to be sent with a MsgSnap that carries only
// metadata. The leader's runtime then streams the latest snapshot in Storage
// to the follower as MsgSnap chunks of at most Config.SnapshotChunkSize
// bytes, keeping at most snapshotWindow chunks unacknowledged. The follower's
// runtime acknowledges each chunk with MsgSnapAck carrying the number of
// bytes received in order; a lost chunk is resent from that offset. Only
// when the last chunk arrives does the follower hand the whole snapshot to
// its Core, which persists it and restores the state machine: a partial
// snapshot is never applied. A transfer from a different leader or of a
// different snapshot replaces the one in progress.

const (
	snapshotWindow = 4  // chunks in flight per transfer
	snapshotStalls = 10 // ack timeouts without progress before giving up
)

type snapAck struct {
	offset uint64
	done   bool
	reject bool
}

// snapSender is one outgoing snapshot transfer, run by its own goroutine.
type snapSender struct {
	to   NodeID
	term uint64
	acks chan snapAck
}

// snapReceiver assembles one incoming snapshot; it is owned by the loop.
type snapReceiver struct {
	from NodeID
	term uint64
	meta SnapshotMeta
	buf  []byte
	size uint64 // bytes received in order
	done bool
}

// startSnapshotSend starts streaming the snapshot to m.To unless a transfer
// to that peer is already running.
func (n *Node) startSnapshotSend(m Message) {
	n.snapMu.Lock()
	defer n.snapMu.Unlock()
	if n.senders[m.To] != nil {
		return
	}
	s := &snapSender{to: m.To, term: m.Term, acks: make(chan snapAck, 2*snapshotWindow)}
	n.senders[m.To] = s
	n.wg.Add(1)
	go n.runSnapshotSend(s)
}

// routeSnapAck passes an acknowledgement to the transfer it belongs to.
func (n *Node) routeSnapAck(m Message) {
	n.snapMu.Lock()
	s := n.senders[m.From]
	n.snapMu.Unlock()
	if s == nil || m.Term != s.term {
		return
	}
	select {
	case s.acks <- snapAck{offset: m.SnapshotOffset, done: m.SnapshotDone, reject: m.Reject}:
	default: // the sender is behind on acks; a later one supersedes this
	}
}

type snapChunk struct {
	off  uint64
	data []byte
	done bool
}

func (n *Node) runSnapshotSend(s *snapSender) {
	defer n.wg.Done()
	defer func() {
		n.snapMu.Lock()
		delete(n.senders, s.to)
		n.snapMu.Unlock()
	}()
	if err := n.sendSnapshotChunks(s); err != nil {
		n.logger.Warn("snapshot transfer abandoned; the leader will retry", "to", uint64(s.to), "err", err)
	}
}

var errSnapshotStalled = errors.New("raft: snapshot transfer made no progress")

func (n *Node) sendSnapshotChunks(s *snapSender) error {
	meta, rc, err := n.st.Snapshot()
	if err != nil {
		return err
	}
	defer rc.Close()
	n.logger.Info("streaming snapshot", "to", uint64(s.to), "index", meta.Index)
	timeout := time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var (
		unacked []snapChunk
		next    uint64
		eof     bool
		stalls  int
	)
	send := func(c snapChunk) {
		n.tr.Send([]Message{{
			Type: MsgSnap, From: n.id, To: s.to, Term: s.term, Snapshot: meta,
			SnapshotOffset: c.off, SnapshotData: c.data, SnapshotDone: c.done,
		}})
	}
	for {
		for !eof && len(unacked) < snapshotWindow {
			buf := make([]byte, n.cfg.SnapshotChunkSize)
			k, err := io.ReadFull(rc, buf)
			switch err {
			case nil:
			case io.EOF, io.ErrUnexpectedEOF:
				eof = true
			default:
				return err
			}
			c := snapChunk{off: next, data: buf[:k:k], done: eof}
			next += uint64(k)
			unacked = append(unacked, c)
			send(c)
		}
		select {
		case a := <-s.acks:
			if a.reject {
				return errors.New("raft: follower asked to restart the transfer")
			}
			if a.done {
				return nil
			}
			progressed := false
			for len(unacked) > 0 && (unacked[0].off+uint64(len(unacked[0].data)) <= a.offset) && !unacked[0].done {
				unacked = unacked[1:]
				progressed = true
			}
			if progressed {
				stalls = 0
			} else if len(unacked) > 0 && a.offset == unacked[0].off {
				// The follower is missing the first unacknowledged chunk.
				send(unacked[0])
			}
		case <-timer.C:
			stalls++
			if stalls > snapshotStalls {
				return errSnapshotStalled
			}
			for _, c := range unacked {
				send(c)
			}
			timer.Reset(timeout)
		case <-n.loopExit:
			return nil
		}
	}
}

// handleSnapshotChunk assembles incoming chunks and hands a complete
// snapshot to the Core. It runs on the loop goroutine.
func (n *Node) handleSnapshotChunk(m Message) {
	if m.Term < n.core.Term() {
		return // a deposed leader's transfer
	}
	r := n.recv
	if r == nil || r.from != m.From || r.term != m.Term || r.meta.Index != m.Snapshot.Index || r.meta.Term != m.Snapshot.Term {
		if m.SnapshotOffset != 0 {
			n.ackSnapshot(m, 0, false, true)
			return
		}
		r = &snapReceiver{from: m.From, term: m.Term, meta: m.Snapshot}
		n.recv = r
	}
	switch {
	case r.done:
	case m.SnapshotOffset != r.size:
		// A chunk was lost or repeated: say where to resume.
	default:
		r.buf = append(r.buf, m.SnapshotData...)
		r.size += uint64(len(m.SnapshotData))
		if m.SnapshotDone {
			r.done = true
			whole := m
			whole.SnapshotOffset, whole.SnapshotData = 0, r.buf
			if whole.SnapshotData == nil {
				whole.SnapshotData = []byte{}
			}
			r.buf = nil
			n.core.Step(whole)
		}
	}
	n.ackSnapshot(m, r.size, r.done, false)
}

func (n *Node) ackSnapshot(m Message, offset uint64, done, reject bool) {
	n.tr.Send([]Message{{
		Type: MsgSnapAck, From: n.id, To: m.From, Term: m.Term, Index: m.Snapshot.Index,
		SnapshotOffset: offset, SnapshotDone: done, Reject: reject,
	}})
}
