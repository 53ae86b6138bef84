package transporttest

import (
	"slices"
	"sync"
	"time"

	"github.com/raftgo/raft"
)

// cases is the suite. Each contract is one sentence from the
// raft.Transport documentation or what Raft relies on in practice. Every
// case also checks, on every delivery, that the message arrived intact and
// at the node named in its To field, and after the case that no goroutine
// outlives Close.
var cases = []testCase{
	{
		name:     "StartAndClose",
		contract: "A transport started and closed without traffic returns from Close and leaves no goroutine behind.",
		nodes:    2,
		check:    func(c *checker) { c.startAll() },
	},
	{
		name:     "DeliversIntact",
		contract: "A message sent to a peer is delivered to that peer with every field intact, for every message shape and for a 1 MiB snapshot chunk.",
		nodes:    2,
		check: func(c *checker) {
			c.startAll()
			c.deliverAll(1, 2, seqRange(0, 60), "small messages")
			c.deliverAll(2, 1, seqRange(0, 12), "small messages back")
			const size = 1 << 20
			c.deliverAllMsgs(1, 2, []uint64{bigSeq}, func(s uint64) raft.Message { return bigMessage(1, 2, s, size) }, "1 MiB snapshot chunk")
			want := bigMessage(1, 2, bigSeq, size)
			for _, m := range c.received(2) {
				if m.Index == bigSeq && !equalMessages(m, want) {
					c.errorf("the 1 MiB snapshot chunk arrived altered (%d data bytes, want %d)", len(m.SnapshotData), size)
				}
			}
		},
	},
	{
		name:     "AllPairs",
		contract: "Every node reaches every other node, and each message is handed only to the node named in its To field.",
		nodes:    3,
		check: func(c *checker) {
			c.startAll()
			for _, from := range c.ids {
				for _, to := range c.ids {
					if from != to {
						c.deliverAll(from, to, seqRange(100, 112), "pairwise messages")
					}
				}
			}
		},
	},
	{
		name:     "SendCopiesMessages",
		contract: "Send neither modifies the caller's slice nor reads it after returning: overwriting the slice right after Send does not change what is delivered.",
		nodes:    2,
		check: func(c *checker) {
			c.startAll()
			c.deliverAll(1, 2, []uint64{0}, "warm-up message")
			seqs := seqRange(200, 230)
			msgs := make([]raft.Message, len(seqs))
			for i, s := range seqs {
				msgs[i] = testMessage(1, 2, s)
			}
			c.send(1, msgs)
			for i, s := range seqs {
				if !equalMessages(msgs[i], testMessage(1, 2, s)) {
					c.errorf("Send modified msgs[%d]", i)
				}
				// Same identity, different content: if the transport reads
				// the slice later, the receiver sees an altered message.
				msgs[i].Term += 1000
				msgs[i].Entries = nil
				msgs[i].SnapshotData = []byte("overwritten")
			}
			c.deliverAll(1, 2, seqs, "messages whose slice was overwritten")
		},
	},
	{
		name:     "ConcurrentUse",
		contract: "Send, SetPeers and deliveries may run at the same time from many goroutines without data races, and messages still arrive intact.",
		nodes:    3,
		check: func(c *checker) {
			c.startAll()
			peers := c.cluster.Peers()
			var wg sync.WaitGroup
			for _, from := range c.ids {
				tr := c.nodes[from].transport()
				for g := range 3 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.recoverInto("Send")
						var batch []raft.Message
						for i := range uint64(200) {
							seq := 1000 + uint64(g)*1000 + i
							for _, to := range c.ids {
								if to != from {
									batch = append(batch, testMessage(from, to, seq))
								}
							}
							if len(batch) >= int(i%5)+2 {
								tr.Send(batch)
								batch = batch[:0]
							}
						}
						tr.Send(batch)
					}()
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.recoverInto("SetPeers")
					for range 50 {
						tr.SetPeers(slices.Clone(peers))
					}
				}()
			}
			if !c.within(c.wait, wg.Wait) {
				c.fatalf("concurrent Send and SetPeers calls did not finish within %v", c.wait)
			}
			for _, from := range c.ids {
				for _, to := range c.ids {
					if from != to {
						c.deliverAll(from, to, []uint64{9000}, "message after the concurrent burst")
					}
				}
			}
		},
	},
	{
		name:     "PeerDownDoesNotBlock",
		contract: "While a peer's transport is closed, Send returns promptly and messages to the other peers keep arriving.",
		nodes:    3,
		check: func(c *checker) {
			c.startAll()
			c.deliverAll(1, 2, []uint64{0}, "warm-up message")
			c.close(2)
			c.burstWithin(1, 2, 3, 300)
			c.deliverAll(1, 3, seqRange(5000, 5010), "messages to a live peer while another is down")
		},
	},
	{
		name:     "RecoversAfterRestart",
		contract: "After a peer's transport is closed and a new one started in its place, messages reach that peer again, in both directions.",
		nodes:    3,
		check: func(c *checker) {
			c.startAll()
			c.deliverAll(1, 2, []uint64{0}, "warm-up message")
			c.deliverAll(2, 1, []uint64{0}, "warm-up message")
			c.close(2)
			c.send(1, []raft.Message{testMessage(1, 2, 1), testMessage(1, 2, 2)})
			c.start(2)
			c.deliverAll(1, 2, seqRange(10, 20), "messages to a restarted peer")
			c.deliverAll(2, 1, seqRange(10, 20), "messages from a restarted peer")
			c.deliverAll(3, 2, seqRange(10, 20), "messages from a bystander to a restarted peer")
		},
	},
	{
		name:     "ClosedTransportIsSilent",
		contract: "After Close returns a transport delivers nothing more, and Send on it returns without panicking, blocking or sending.",
		nodes:    3,
		check: func(c *checker) {
			c.startAll()
			c.deliverAll(1, 2, []uint64{0}, "warm-up message")
			c.deliverAll(2, 1, []uint64{0}, "warm-up message")
			old := c.nodes[2].transport()
			c.close(2)
			if !c.within(c.wait, func() {
				for i := range uint64(20) {
					old.Send([]raft.Message{testMessage(2, 1, 300+i), testMessage(2, 3, 300+i)})
				}
			}) {
				c.fatalf("Send on a closed transport blocked")
			}
			c.send(1, []raft.Message{testMessage(1, 2, 300), testMessage(1, 2, 301)})
			// Let anything wrongly in flight arrive: a round trip between
			// the live nodes after those sends.
			c.deliverAll(1, 3, seqRange(300, 305), "messages between live nodes")
			c.deliverAll(3, 1, seqRange(300, 305), "messages between live nodes")
			for _, id := range []raft.NodeID{1, 3} {
				for _, m := range c.received(id) {
					if m.From == 2 && m.Index >= 300 {
						c.errorf("node %d received %v, sent by node 2's transport after its Close", id, m)
					}
				}
			}
			n := c.nodes[2]
			n.mu.Lock()
			for _, s := range n.late {
				c.errorf("%s", s)
			}
			n.mu.Unlock()
		},
	},
	{
		name:     "SetPeersReAdd",
		contract: "SetPeers may repeat the membership at any time, and a peer removed by SetPeers and later added back is reachable again.",
		nodes:    3,
		check: func(c *checker) {
			c.startAll()
			c.deliverAll(1, 3, []uint64{0}, "warm-up message")
			tr := c.nodes[1].transport()
			all := c.cluster.Peers()
			without3 := slices.DeleteFunc(slices.Clone(all), func(s raft.Server) bool { return s.ID == 3 })
			tr.SetPeers(without3)
			c.send(1, []raft.Message{testMessage(1, 3, 1), testMessage(1, 2, 1)})
			tr.SetPeers(slices.Clone(all))
			tr.SetPeers(slices.Clone(all))
			c.deliverAll(1, 3, seqRange(20, 30), "messages to a re-added peer")
			c.deliverAll(1, 2, seqRange(20, 30), "messages to a peer that stayed")
		},
	},
	{
		name:     "OrderedPerPeer",
		contract: "(Ordered clusters) The messages one node sends another arrive in the order they were sent and none twice.",
		nodes:    2,
		check: func(c *checker) {
			if o, ok := c.cluster.(Ordered); !ok || !o.PreservesOrder() {
				c.skip("the cluster does not implement Ordered")
			}
			c.startAll()
			c.deliverAll(1, 2, []uint64{0}, "warm-up message")
			const lo, hi = 10, 2010
			var batch []raft.Message
			for s := uint64(lo); s < hi; s++ {
				batch = append(batch, testMessage(1, 2, s))
				if len(batch) >= int(s%7)+1 {
					c.send(1, batch)
					batch = nil
				}
			}
			c.send(1, batch)
			c.deliverAll(1, 2, []uint64{hi}, "marker after the ordered burst")
			var last uint64
			got := 0
			for _, m := range c.received(2) {
				if m.From != 1 || m.Index < lo || m.Index >= hi {
					continue
				}
				got++
				if m.Index <= last {
					c.fatalf("seq %d arrived after seq %d", m.Index, last)
				}
				last = m.Index
			}
			if got == 0 {
				c.errorf("none of %d messages sent in order arrived", hi-lo)
			}
		},
	},
	{
		name:     "InlineMoreEndsBatches",
		contract: "(InlineDeliverer transports) Messages arrive through StartInline's deliver, and more is false on the last message delivered before the sender falls quiet.",
		nodes:    2,
		check: func(c *checker) {
			c.startAllInline()
			c.deliverAll(1, 2, seqRange(7000, 7200), "a batch of 200 messages")
			c.moreSettles(1, 2)
			c.deliverAll(1, 2, []uint64{7500}, "a single message")
			c.moreSettles(1, 2)
		},
	},
	{
		name:     "InlineDeliverMaySend",
		contract: "(InlineDeliverer transports) deliver may call SetPeers and Send on the transport that is delivering, as a node does: the replies arrive and nothing deadlocks.",
		nodes:    2,
		check: func(c *checker) {
			c.startAllInline()
			c.nodes[2].mu.Lock()
			c.nodes[2].echo = true
			c.nodes[2].mu.Unlock()
			c.deliverEchoes(1, 2, seqRange(echoSeq, echoSeq+20))
		},
	},
	{
		name:     "OutageDoesNotBlock",
		contract: "(Outages clusters) While a node is cut off, Send to it returns promptly and other peers are unaffected; once it is back, messages flow both ways.",
		nodes:    3,
		check: func(c *checker) {
			o, ok := c.cluster.(Outages)
			if !ok {
				c.skip("the cluster does not implement Outages")
			}
			c.startAll()
			c.deliverAll(1, 2, []uint64{0}, "warm-up message")
			o.Down(2)
			c.burstWithin(1, 2, 3, 300)
			c.deliverAll(1, 3, seqRange(5000, 5010), "messages to a live peer while another is cut off")
			o.Up(2)
			c.deliverAll(1, 2, seqRange(6000, 6010), "messages to a node that is back")
			c.deliverAll(2, 1, seqRange(6000, 6010), "messages from a node that is back")
		},
	},
}

// startAllInline starts every node, and skips the case unless the
// transport is an InlineDeliverer (started with StartInline).
func (c *checker) startAllInline() {
	c.startAll()
	if !c.nodes[c.ids[0]].inline {
		c.skip("the transport does not implement raft.InlineDeliverer")
	}
}

// moreSettles fails the case unless, within c.wait, the latest message
// node to received from node from was delivered with more false.
func (c *checker) moreSettles(from, to raft.NodeID) {
	n := c.nodes[to]
	deadline := time.Now().Add(c.wait)
	for {
		n.mu.Lock()
		more := n.lastMore[from]
		n.mu.Unlock()
		if !more {
			return
		}
		if time.Now().After(deadline) {
			c.fatalf("the last message %d->%d was delivered with more set, and nothing followed within %v: more promises another message at once (a node leaves every message delivered with more to its loop)", from, to, c.wait)
		}
		c.waitSignal(to, 20*time.Millisecond)
	}
}

// deliverEchoes sends seqs from -> to, resending those whose answer (sent
// by to from inside its deliver) has not come back, until every answer
// has, or fails the case after c.wait: a transport whose deliver holds a
// lock that Send or SetPeers needs stops delivering.
func (c *checker) deliverEchoes(from, to raft.NodeID, seqs []uint64) {
	deadline := time.Now().Add(c.wait)
	pending := slices.Clone(seqs)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			c.fatalf("%d of %d answers sent from inside deliver %d->%d did not arrive within %v (first missing seq %d)",
				len(pending), len(seqs), to, from, c.wait, pending[0]+echoSpan)
		}
		msgs := make([]raft.Message, 0, len(pending))
		for _, s := range pending {
			msgs = append(msgs, testMessage(from, to, s))
		}
		c.send(from, msgs)
		c.waitSignal(from, resendEvery)
		pending = slices.DeleteFunc(pending, func(s uint64) bool { return c.delivered(from, to, s+echoSpan) > 0 })
	}
}

// burstWithin sends batches of 5 messages to down and 1 to up, n times
// from node from, and fails the case if that does not finish within
// c.wait: Send must not wait for an unreachable peer.
func (c *checker) burstWithin(from, down, up raft.NodeID, n int) {
	tr := c.nodes[from].transport()
	if !c.within(c.wait, func() {
		for i := range uint64(n) {
			batch := []raft.Message{testMessage(from, up, 3000+i)}
			for j := range uint64(5) {
				batch = append(batch, testMessage(from, down, 3000+i*5+j))
			}
			tr.Send(batch)
		}
	}) {
		c.fatalf("Send blocked: %d batches to an unreachable peer did not return within %v", n, c.wait)
	}
}

// recoverInto turns a panic in a goroutine started by a case into a
// failure.
func (c *checker) recoverInto(what string) {
	if r := recover(); r != nil {
		c.errorf("panic in %s: %v", what, r)
	}
}
