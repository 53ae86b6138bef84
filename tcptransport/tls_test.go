package tcptransport_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"github.com/raftgo/raft/tcptransport/tlstest"
	"go.uber.org/goleak"
)

// TestTLSRejectsImpostors runs node 1 with mutual TLS and has impostors
// try to send it messages: each is refused with a logged reason and none
// of its messages reaches the node, while a legitimate peer's do.
func TestTLSRejectsImpostors(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ca := newCA(t, clusterID)
	otherCA := newCA(t, "other-cluster")
	log := newLogRecorder()

	cfg1 := testConfig(1, log.logger())
	cfg1.TLS = nodeTLS(t, ca, 1)
	tr1 := listen(t, "", cfg1)
	defer tr1.Close()
	in := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2}, {ID: 3}}
	tr1.SetPeers(peers)
	if err := tr1.Start(in.deliver); err != nil {
		t.Fatal(err)
	}

	// A legitimate member gets through.
	cfg2 := testConfig(2, nil)
	cfg2.TLS = nodeTLS(t, ca, 2)
	tr2 := listen(t, "", cfg2)
	tr2.SetPeers(peers)
	tr2.Start(func(raft.Message) {})
	sendUntil(t, tr2, in, raft.Message{Type: raft.MsgHeartbeat, From: 2, To: 1, Term: 1, Context: 1}, 10*time.Second)
	tr2.Close()

	// An impostor presents its certificate whatever the server asks for
	// (Go's client would otherwise withhold one the server's CA list
	// does not cover).
	present := func(c tls.Certificate, err error) *tls.Config {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{
			Certificates:         []tls.Certificate{c},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil },
			RootCAs:              ca.Pool(), // it trusts node 1, so only node 1 can refuse it
		}
	}
	impostors := []struct {
		name   string
		id     raft.NodeID
		tls    *tls.Config
		reason string
	}{
		{"self-signed certificate", 3, present(tlstest.SelfSigned(tcptransport.NodeName(3))),
			"TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"certificate from another cluster's CA", 3, present(otherCA.Issue(tcptransport.NodeName(3))),
			"TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"cluster certificate of another node", 2, present(ca.Issue(tcptransport.NodeName(3))),
			`certificate does not name "node-2"`},
		{"no client certificate", 3, &tls.Config{RootCAs: ca.Pool(), GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }},
			"client didn't provide a certificate"},
		{"no TLS at all", 3, nil, "TLS handshake failed: tls: first record does not look like a TLS handshake"},
	}
	for i, imp := range impostors {
		t.Run(imp.name, func(t *testing.T) {
			marker := uint64(1000 + i)
			logged := log.countReason(imp.reason)
			cfg := testConfig(imp.id, nil)
			cfg.TLS = imp.tls
			tr := listen(t, "", cfg)
			defer tr.Close()
			tr.SetPeers(peers)
			tr.Start(func(raft.Message) {})
			// Keep trying until node 1 has refused the impostor at least
			// twice (it retries with backoff).
			eventually(t, 10*time.Second, "impostor refused twice", func() bool {
				tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: imp.id, To: 1, Term: 50, Context: marker}})
				return log.countReason(imp.reason) >= logged+2 && tr.Stats().DialFailures >= 2
			})
			if s := tr.Stats(); s.MessagesSent != 0 {
				t.Errorf("impostor wrote %d messages to node 1", s.MessagesSent)
			}
			if in.has(func(m raft.Message) bool { return m.Context == marker }) {
				t.Errorf("a message from the impostor reached node 1")
			}
			rec, _ := log.find("closed incoming connection", imp.reason)
			t.Logf("node 1 logged: %s", rec)
		})
	}
}

// TestTLSChecksTheListenerIdentity has node 2 dial an address where a
// listener presents a valid cluster certificate for the wrong node: node
// 2 refuses to send to it.
func TestTLSChecksTheListenerIdentity(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ca := newCA(t, clusterID)
	// "Node 1" at this address holds node 3's certificate.
	cfg1 := testConfig(1, nil)
	cfg1.TLS = nodeTLS(t, ca, 3)
	tr1 := listen(t, "", cfg1)
	defer tr1.Close()
	in := newInbox()
	peers := []raft.Server{{ID: 1, Addr: tr1.Addr().String()}, {ID: 2}}
	tr1.SetPeers(peers)
	tr1.Start(in.deliver)

	log2 := newLogRecorder()
	cfg2 := testConfig(2, log2.logger())
	cfg2.TLS = nodeTLS(t, ca, 2)
	tr2 := listen(t, "", cfg2)
	defer tr2.Close()
	tr2.SetPeers(peers)
	tr2.Start(func(raft.Message) {})
	eventually(t, 10*time.Second, "node 2 refuses the listener", func() bool {
		tr2.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 2, To: 1, Term: 1}})
		return tr2.Stats().DialFailures >= 2
	})
	rec := log2.waitLog(t, "cannot connect to peer", "node-1")
	t.Logf("node 2 logged: %s", rec)
	if len(in.all()) != 0 || tr2.Stats().MessagesSent != 0 {
		t.Errorf("node 2 sent to a listener with the wrong certificate")
	}
}
