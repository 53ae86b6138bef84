package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
	"github.com/raftgo/raft/tcptransport/tlstest"
)

func TestAddrHalves(t *testing.T) {
	cases := []struct{ raft, http, joined string }{
		{"127.0.0.1:7001", "127.0.0.1:8001", "127.0.0.1:7001|127.0.0.1:8001"},
		{"127.0.0.1:7001", "", "127.0.0.1:7001"},
		{"[::1]:7001", "[::1]:8001", "[::1]:7001|[::1]:8001"},
	}
	for _, tc := range cases {
		got := joinAddr(tc.raft, tc.http)
		if got != tc.joined {
			t.Errorf("joinAddr(%q, %q) = %q, want %q", tc.raft, tc.http, got, tc.joined)
		}
		r, h := splitAddr(got)
		if r != tc.raft || h != tc.http {
			t.Errorf("splitAddr(%q) = %q, %q; want %q, %q", got, r, h, tc.raft, tc.http)
		}
	}
}

func TestClusterPeersIsTheSameOnEveryNode(t *testing.T) {
	o := options{
		listen: "127.0.0.1:7001", httpAddr: "127.0.0.1:8001",
		peers:     "3=127.0.0.1:7003,1=127.0.0.1:7001,2=127.0.0.1:7002",
		peersHTTP: "2=127.0.0.1:8002,3=127.0.0.1:8003,1=127.0.0.1:8001",
	}
	want := []raft.Server{
		{ID: 1, Addr: "127.0.0.1:7001|127.0.0.1:8001", Suffrage: raft.Voter},
		{ID: 2, Addr: "127.0.0.1:7002|127.0.0.1:8002", Suffrage: raft.Voter},
		{ID: 3, Addr: "127.0.0.1:7003|127.0.0.1:8003", Suffrage: raft.Voter},
	}
	for id := 1; id <= 3; id++ {
		o.id = uint64(id)
		o.listen = fmt.Sprintf("127.0.0.1:700%d", id)
		o.httpAddr = fmt.Sprintf("127.0.0.1:800%d", id)
		for range 5 { // map order differs between calls
			got, err := clusterPeers(o)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("node %d: clusterPeers = %v, %v; want %v (the bootstrap entry must be identical everywhere)", id, got, err, want)
			}
		}
	}
}

// TestRestartRejoinsAndJoinAddsNodeOverTLS runs three kvexample processes
// with mutual TLS and durable storage: a SIGKILLed node restarted with a
// different -peers keeps its stored configuration and catches up, and a
// fourth node joins through a follower with -join, becomes a voter, and
// after a SIGKILL and restart is still one and still has the data.
func TestRestartRejoinsAndJoinAddsNodeOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with subprocesses")
	}
	bin := buildKV(t)
	certs := t.TempDir()
	ca, err := tlstest.NewCA("kvexample-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(certs, 1, 2, 3, 4); err != nil {
		t.Fatal(err)
	}
	tlsArgs := func(id int) []string {
		name := tcptransport.NodeName(raft.NodeID(id))
		return []string{
			"-tls-cert", filepath.Join(certs, name+".pem"),
			"-tls-key", filepath.Join(certs, name+"-key.pem"),
			"-tls-ca", filepath.Join(certs, "ca.pem"),
		}
	}
	c := newProcCluster(t, bin, 3, tlsArgs)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	c.startAll()
	lead := c.waitLeader(30 * time.Second)
	client := &http.Client{Timeout: 10 * time.Second}
	put := func(p *proc, key, value string) {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("PUT %s via node %d", key, p.id), func() error {
			code, body, err := httpDo(context.Background(), client, http.MethodPut, "http://"+p.httpAddr+"/kv/"+key, value)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%d %s %v", code, body, err)
			}
			return nil
		})
	}
	// read checks a linearizable read of key on p, retried while the node
	// catches up or elects.
	read := func(p *proc, key, want string) {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("node %d reads %s=%s", p.id, key, want), func() error {
			code, body, err := httpDo(context.Background(), client, http.MethodGet, "http://"+p.httpAddr+"/kv/"+key, "")
			if err != nil || code != http.StatusOK || string(body) != want {
				return fmt.Errorf("%d %q %v", code, body, err)
			}
			return nil
		})
	}
	follower := c.procs[1+lead%3]
	put(follower, "a", "1") // through a follower: redirected to the leader over -peers-http

	// Kill a node, write while it is down, restart it with a -peers that
	// names only itself: were it bootstrapped again, it would lead a
	// cluster of one.
	victim := c.procs[3]
	victim.kill()
	put(c.procs[1], "b", "2")
	victim.args = slices.Clone(victim.args)
	for i, a := range victim.args {
		switch a {
		case "-peers":
			victim.args[i+1] = "3=" + victim.raftAddr
		case "-peers-http":
			victim.args[i+1] = "3=" + victim.httpAddr
		}
	}
	victim.mustStart(t)
	read(victim, "b", "2")
	st, err := victim.status()
	if err != nil || len(st.Members) != 3 {
		t.Fatalf("restarted node's status: %+v, %v; want the stored 3-member configuration", st, err)
	}
	if !strings.Contains(victim.log(), "-peers ignored") {
		t.Errorf("restarted node did not say it ignored -peers:\n%s", victim.log())
	}
	c.waitLeader(30 * time.Second)

	// A fourth node joins through a follower's HTTP address.
	lead = c.waitLeader(30 * time.Second)
	via := c.procs[1+lead%3]
	addrs := freePorts(t, 2)
	n4 := c.add(4, addrs[0], addrs[1], append([]string{"-join", via.httpAddr}, tlsArgs(4)...)...)
	n4.mustStart(t)
	isVoter := func() error {
		st, err := c.procs[lead].status()
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.ID == 4 && m.Suffrage == "voter" && m.Addr == n4.raftAddr+"|"+n4.httpAddr {
				return nil
			}
		}
		return fmt.Errorf("members %+v", st.Members)
	}
	waitFor(t, 60*time.Second, "node 4 is a voter", isVoter)
	read(n4, "a", "1")
	read(n4, "b", "2")
	if !strings.Contains(n4.log(), "joined the cluster as a voter") {
		t.Errorf("node 4 did not report joining:\n%s", n4.log())
	}
	put(n4, "c", "3") // node 4 redirects to the leader it learned from the configuration

	// Node 4 survives a SIGKILL: restarted with the same flags, it keeps
	// its data and its vote.
	n4.kill()
	put(c.procs[1], "d", "4")
	n4.mustStart(t)
	read(n4, "d", "4")
	read(n4, "c", "3")
	waitFor(t, 30*time.Second, "node 4 is still a voter", isVoter)
	st, err = n4.status()
	if err != nil || len(st.Members) != 4 {
		t.Fatalf("node 4's status after restart: %+v, %v", st, err)
	}
	if runs := strings.Count(n4.log(), "restarting from"); runs != 1 {
		t.Errorf("node 4 restarted %d times from its data, want 1:\n%s", runs, n4.log())
	}
	// All four agree and every node has every key.
	c.waitLeader(30 * time.Second)
	for id := 1; id <= 4; id++ {
		for i, key := range []string{"a", "b", "c", "d"} {
			read(c.procs[id], key, strconv.Itoa(i+1))
		}
	}
}

func TestEmptyNodeNeedsPeersOrJoin(t *testing.T) {
	addrs := freePorts(t, 2)
	args := []string{"-id", "1", "-listen", addrs[0], "-http", addrs[1], "-data", t.TempDir(), "-log", "error"}
	err := run(context.Background(), args, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "give -peers") {
		t.Fatalf("run(%q) = %v, want the empty-data error", args, err)
	}
}
