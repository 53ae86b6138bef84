package raft

import (
	"context"
	"errors"
	"time"
)

// AddVoter makes id a voting member with transport address addr. A server
// that is not yet a member is first added as a learner and promoted once
// its log has caught up with the leader's, so adding an empty server never
// stalls commits. It returns nil once the change is applied on this node
// (and at once if id is already a voter). Only the leader accepts
// membership changes; others return a *NotLeaderError. A change while
// another is pending returns ErrConfChangePending.
func (n *Node) AddVoter(ctx context.Context, id NodeID, addr string) error {
	s, member, err := n.member(ctx, id)
	if err != nil {
		return err
	}
	if member && s.Suffrage == Voter {
		return nil
	}
	if !member {
		if err := n.changeConfig(ctx, ConfChange{Type: AddLearner, ID: id, Addr: addr}); err != nil {
			return err
		}
	}
	if err := n.waitCaughtUp(ctx, id); err != nil {
		return err
	}
	return n.changeConfig(ctx, ConfChange{Type: AddVoter, ID: id, Addr: addr})
}

// AddLearner adds id as a non-voting member that receives the log. It
// returns nil once the change is applied on this node, or at once if id is
// already a member.
func (n *Node) AddLearner(ctx context.Context, id NodeID, addr string) error {
	if _, member, err := n.member(ctx, id); err != nil || member {
		return err
	}
	return n.changeConfig(ctx, ConfChange{Type: AddLearner, ID: id, Addr: addr})
}

// RemoveServer removes id, voter or learner, from the cluster and returns
// once the change is applied on this node. Removing the leader itself is
// allowed: it keeps leading until the change commits, then steps down.
// Removing a server that is not a member returns nil.
func (n *Node) RemoveServer(ctx context.Context, id NodeID) error {
	if _, member, err := n.member(ctx, id); err != nil || !member {
		return err
	}
	return n.changeConfig(ctx, ConfChange{Type: RemoveServer, ID: id})
}

// member looks id up in the configuration in force, on the leader.
func (n *Node) member(ctx context.Context, id NodeID) (Server, bool, error) {
	if n.stopCalled.Load() {
		return Server{}, false, ErrStopped
	}
	if id == None {
		return Server{}, false, errors.New("raft: membership change names server 0")
	}
	var s Server
	var ok bool
	var lerr error
	err := n.do(ctx, func() {
		if n.core.Role() != Leader {
			lerr = n.notLeader()
			return
		}
		s, ok = n.core.Config().Server(id)
	})
	if err == nil {
		err = lerr
	}
	return s, ok, err
}

// changeConfig proposes cc and waits until it is applied here. A leader
// that has not yet committed an entry of its term is waited for.
func (n *Node) changeConfig(ctx context.Context, cc ConfChange) error {
	p := getProposal()
	p.cc = &cc
	for {
		var perr error
		if err := n.do(ctx, func() {
			idx, err := n.core.ProposeConfChange(cc)
			if err != nil {
				perr = n.wrapNotLeader(err)
				return
			}
			n.app.register([]*proposal{p}, idx, n.core.Term())
		}); err != nil {
			return err
		}
		if perr == nil {
			break
		}
		if !errors.Is(perr, errLeaderNotReady) {
			return perr
		}
		if err := n.pause(ctx); err != nil {
			return err
		}
	}
	select {
	case r := <-p.done:
		putProposal(p)
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.donec:
		return ErrStopped
	}
}

// waitCaughtUp waits until the leader's match index for id reaches the
// commit index it saw one heartbeat earlier: the learner keeps pace.
func (n *Node) waitCaughtUp(ctx context.Context, id NodeID) error {
	var target uint64
	for {
		s := n.Status()
		if s.Stopped {
			return ErrStopped
		}
		if s.Role != Leader {
			return &NotLeaderError{Leader: s.Leader}
		}
		pr, ok := s.Progress[id]
		if !ok {
			return errors.New("raft: server was removed while catching up")
		}
		if target > 0 && pr.Match >= target {
			return nil
		}
		target = max(s.Commit, 1)
		if err := n.pause(ctx); err != nil {
			return err
		}
	}
}

// pause waits one heartbeat interval, or returns early with ctx's error or
// ErrStopped.
func (n *Node) pause(ctx context.Context) error {
	t := time.NewTimer(time.Duration(n.cfg.HeartbeatTicks) * n.cfg.TickInterval)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.donec:
		return ErrStopped
	}
}
