package tcptransport_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"go.uber.org/goleak"
)

// TestJoiningNodeAnswersAtAdvertisedAddress starts a node with no
// configuration (waiting to be added) and a member that knows its
// address: the member reaches it, and the joiner answers the member at the
// address the member advertised in its hello, with no address given to
// the joiner. Over TLS too, where the joiner's dial checks that the
// listener at the advertised address holds the member's certificate.
func TestJoiningNodeAnswersAtAdvertisedAddress(t *testing.T) {
	for _, mode := range []string{"plain", "tls"} {
		t.Run(mode, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cfg1, cfg4 := testConfig(1, nil), testConfig(4, nil)
			log4 := newLogRecorder()
			cfg4.Logger = log4.logger()
			if mode == "tls" {
				ca := newCA(t, clusterID)
				cfg1.TLS, cfg4.TLS = nodeTLS(t, ca, 1), nodeTLS(t, ca, 4)
			}
			joiner := listen(t, "", cfg4)
			defer joiner.Close()
			in4 := newInbox()
			joiner.SetPeers(nil)
			joiner.Start(in4.deliver)
			tr1 := listen(t, "", cfg1)
			defer tr1.Close()
			in1 := newInbox()
			tr1.SetPeers([]raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 4, Addr: joiner.Addr().String()}})
			tr1.Start(in1.deliver)

			sendUntil(t, tr1, in4, raft.Message{Type: raft.MsgApp, From: 1, To: 4, Term: 2, Context: 7}, 10*time.Second)
			sendUntil(t, joiner, in1, raft.Message{Type: raft.MsgAppResp, From: 4, To: 1, Term: 2, Context: 8}, 10*time.Second)
			p := joiner.Stats().Peers[1]
			if p.Addr != tr1.Addr().String() || !p.AddrLearned || !p.Connected {
				t.Errorf("joiner's peer 1 = %+v, want connected to %s, learned", p, tr1.Addr())
			}
			log4.waitLog(t, "answering a peer at the address it advertised", "peer=1", "addr="+tr1.Addr().String())
		})
	}
}

// rawHello connects to addr as node from, advertising adv, and returns
// the connection once the listener accepted the hello.
func rawHello(t *testing.T, addr string, from, to raft.NodeID, adv string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(helloBytesAddr(from, to, clusterID, adv)); err != nil {
		t.Fatal(err)
	}
	var st [1]byte
	if _, err := io.ReadFull(c, st[:]); err != nil || st[0] != 0 {
		t.Fatalf("hello from node %d advertising %q: status %d, err %v", from, adv, st[0], err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// peerIs waits until tr's peer id has the address addr, learned or not.
func peerIs(t *testing.T, tr *tcptransport.Transport, id raft.NodeID, addr string, learned bool) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("peer %d at %s (learned %t)", id, addr, learned), func() bool {
		p, ok := tr.Stats().Peers[id]
		return ok && p.Addr == addr && p.AddrLearned == learned
	})
}

// TestConfiguredAddressWinsOverAdvertised checks which address a node
// dials: the advertised one while it has no configuration, the configured
// one as soon as SetPeers gives one (later hellos do not change it), and
// the advertised one again for a member configured without an address.
// Peers learned before the configuration that are not in it are dropped.
func TestConfiguredAddressWinsOverAdvertised(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	joiner := listen(t, "", testConfig(4, nil))
	defer joiner.Close()
	joiner.SetPeers(nil)
	joiner.Start(func(raft.Message) {})
	ja := joiner.Addr().String()

	rawHello(t, ja, 1, 4, "127.0.0.1:9")
	peerIs(t, joiner, 1, "127.0.0.1:9", true)
	rawHello(t, ja, 7, 4, "127.0.0.1:10")
	peerIs(t, joiner, 7, "127.0.0.1:10", true)
	// A newer hello from the same node moves it while nothing is configured.
	rawHello(t, ja, 1, 4, "127.0.0.1:11")
	peerIs(t, joiner, 1, "127.0.0.1:11", true)
	// A hello advertising nothing leaves the learned address alone.
	before := joiner.Stats().ConnectionsAccepted
	rawHello(t, ja, 1, 4, "")
	eventually(t, 10*time.Second, "hello without address accepted", func() bool {
		return joiner.Stats().ConnectionsAccepted > before
	})
	peerIs(t, joiner, 1, "127.0.0.1:11", true)
	// An empty configuration again keeps the learned peers.
	joiner.SetPeers(nil)
	peerIs(t, joiner, 1, "127.0.0.1:11", true)
	peerIs(t, joiner, 7, "127.0.0.1:10", true)

	// The configuration arrives: node 1's configured address replaces the
	// learned one, and node 7, not a member, is forgotten.
	tr1 := listen(t, "", testConfig(1, nil))
	defer tr1.Close()
	in1 := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 4, Addr: ja}, {ID: 5}}
	tr1.SetPeers(peers)
	tr1.Start(in1.deliver)
	joiner.SetPeers(peers)
	peerIs(t, joiner, 1, tr1.Addr().String(), false)
	if _, ok := joiner.Stats().Peers[7]; ok {
		t.Errorf("node 7, learned but not in the configuration, is still a peer")
	}
	sendUntil(t, joiner, in1, raft.Message{Type: raft.MsgHeartbeatResp, From: 4, To: 1, Context: 1}, 10*time.Second)

	// A later hello from node 1 advertising another address is accepted
	// but does not move it.
	before = joiner.Stats().ConnectionsAccepted
	rawHello(t, ja, 1, 4, "127.0.0.1:12")
	eventually(t, 10*time.Second, "second hello from node 1 accepted", func() bool {
		return joiner.Stats().ConnectionsAccepted > before
	})
	peerIs(t, joiner, 1, tr1.Addr().String(), false)

	// Node 5 is a member without an address: what it advertises is used,
	// until the configuration gives it one.
	peerIs(t, joiner, 5, "", false)
	rawHello(t, ja, 5, 4, "127.0.0.1:13")
	peerIs(t, joiner, 5, "127.0.0.1:13", true)
	peers[2].Addr = "127.0.0.1:14"
	joiner.SetPeers(peers)
	peerIs(t, joiner, 5, "127.0.0.1:14", false)
}

// TestLearnedPeersAreBounded checks that senders claiming ever new node
// IDs to a node without configuration make it record at most
// MaxLearnedPeers addresses (and so start at most that many peer
// goroutines), logging the ones it ignores; their connections are still
// served.
func TestLearnedPeersAreBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	log := newLogRecorder()
	joiner := listen(t, "", testConfig(4, log.logger()))
	defer joiner.Close()
	joiner.SetPeers(nil)
	joiner.Start(func(raft.Message) {})
	n := tcptransport.MaxLearnedPeers + 5
	for i := range n {
		rawHello(t, joiner.Addr().String(), raft.NodeID(100+i), 4, fmt.Sprintf("127.0.0.1:%d", 1000+i))
	}
	eventually(t, 10*time.Second, "every hello accepted", func() bool {
		return joiner.Stats().ConnectionsAccepted == uint64(n)
	})
	if got := len(joiner.Stats().Peers); got != tcptransport.MaxLearnedPeers {
		t.Errorf("%d peers learned, want the bound %d", got, tcptransport.MaxLearnedPeers)
	}
	log.waitLog(t, "not recording an advertised address", "too many peers learned")
}

// TestAdvertiseAddrIsSent checks that an explicit AdvertiseAddr, not the
// listener's address, is what a joiner learns.
func TestAdvertiseAddrIsSent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	joiner := listen(t, "", testConfig(4, nil))
	defer joiner.Close()
	joiner.SetPeers(nil)
	in4 := newInbox()
	joiner.Start(in4.deliver)
	cfg1 := testConfig(1, nil)
	cfg1.AdvertiseAddr = "localhost:7777"
	tr1 := listen(t, "", cfg1)
	defer tr1.Close()
	tr1.SetPeers([]raft.Server{{ID: 1, Addr: "localhost:7777"}, {ID: 4, Addr: joiner.Addr().String()}})
	tr1.Start(func(raft.Message) {})
	sendUntil(t, tr1, in4, raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 4, Context: 1}, 10*time.Second)
	peerIs(t, joiner, 1, "localhost:7777", true)
}

// TestJoinerWithEmptyConfigurationBecomesVoterAndLeads starts a fourth
// raft.Node with no Peers at all (it knows no address, not even the
// leader's) next to a 3-node cluster over TCP, has the leader add it with
// AddVoter, and hands it leadership: it catches up as a learner, is
// promoted, wins the election and commits. Nothing tells the joiner any
// address; it answers the leader at the address the leader advertises in
// its hello until the configuration reaches it through the log.
func TestJoinerWithEmptyConfigurationBecomesVoterAndLeads(t *testing.T) {
	for _, mode := range []string{"plain", "tls"} {
		t.Run(mode, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			tlsFor := tlsForMode(t, mode, 4)
			trCfg := clusterTransportConfig(tlsFor)
			c := newTCPRaftCluster(t, 3, trCfg, nil)
			want := []string{"before"}
			c.propose("before")
			lead := c.waitLeader()

			const joiner = raft.NodeID(4)
			tr := listen(t, "", trCfg(joiner))
			cfg := raft.DefaultConfig()
			cfg.ID = joiner // no Peers: the node waits to be added
			sm := &listSM{}
			st := raft.NewMemoryStorage()
			nd, err := raft.NewNode(cfg, sm, st, tr)
			if err != nil {
				t.Fatal(err)
			}
			c.nodes[joiner], c.sms[joiner], c.stores[joiner], c.trs[joiner] = nd, sm, st, tr

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := c.nodes[lead].AddVoter(ctx, joiner, tr.Addr().String()); err != nil {
				t.Fatalf("AddVoter: %v", err)
			}
			eventually(t, 30*time.Second, "the joiner sees itself as a voter", func() bool {
				s, ok := nd.Status().Config.Server(joiner)
				return ok && s.Suffrage == raft.Voter
			})
			// The joiner now dials every member at its configured address.
			eventually(t, 30*time.Second, "the joiner's peers are the configured members", func() bool {
				ps := tr.Stats().Peers
				for _, s := range c.peers {
					if p, ok := ps[s.ID]; !ok || p.Addr != s.Addr || p.AddrLearned {
						return false
					}
				}
				return len(ps) == 3
			})

			// Hand it leadership and commit through it; retry if a
			// transfer is abandoned or leadership moves on a slow machine.
			for attempt := 0; ; attempt++ {
				if attempt == 10 {
					t.Fatalf("the joiner never committed a command as leader")
				}
				if cur := c.waitLeader(); cur != joiner {
					if err := c.nodes[cur].TransferLeadership(ctx, joiner); err != nil {
						t.Logf("transfer attempt %d from node %d: %v", attempt, cur, err)
						continue
					}
				}
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := nd.Propose(pctx, []byte("led-by-joiner"))
				pcancel()
				if err == nil {
					break
				}
				t.Logf("propose through the joiner, attempt %d: %v", attempt, err)
			}
			want = append(want, "led-by-joiner")
			c.propose("after")
			want = append(want, "after")
			c.waitApplied(want)
			c.stopAll()
		})
	}
}
