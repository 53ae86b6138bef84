package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/filestorage"
	"github.com/raftgo/raft/kvexample/httpapi"
	"github.com/raftgo/raft/kvexample/kvstore"
	"github.com/raftgo/raft/tcptransport"
)

// A member's address in the cluster configuration (raft.Server.Addr) is
// "RAFTADDR|HTTPADDR": the raft TCP address, then the HTTP API address
// that followers redirect writes to. The configuration is replicated
// through the log, so every node, including one added later or restarted
// without -peers-http, learns every member's HTTP address. The transport
// sees only the part before "|" (see splitAddrTransport). An address
// without "|" has no known HTTP address.
const addrSep = "|"

// joinAddr builds a configuration address from its two halves.
func joinAddr(raftAddr, httpAddr string) string {
	if httpAddr == "" {
		return raftAddr
	}
	return raftAddr + addrSep + httpAddr
}

// splitAddr splits a configuration address into its raft and HTTP halves.
func splitAddr(addr string) (raftAddr, httpAddr string) {
	raftAddr, httpAddr, _ = strings.Cut(addr, addrSep)
	return raftAddr, httpAddr
}

// splitAddrTransport is a tcptransport.Transport that is given
// "RAFTADDR|HTTPADDR" configuration addresses and dials only RAFTADDR.
type splitAddrTransport struct {
	*tcptransport.Transport
}

// SetPeers passes the members on with their raft addresses only.
func (t splitAddrTransport) SetPeers(servers []raft.Server) {
	out := make([]raft.Server, len(servers))
	for i, s := range servers {
		s.Addr, _ = splitAddr(s.Addr)
		out[i] = s
	}
	t.Transport.SetPeers(out)
}

// backends opens the durable Storage in o.dataDir and the TCP Transport
// listening on o.listen (with mutual TLS if the certificate flags are set).
func backends(o options, logger *slog.Logger) (*filestorage.Storage, *tcptransport.Transport, error) {
	tlsCfg, err := loadTLS(o)
	if err != nil {
		return nil, nil, err
	}
	st, err := filestorage.Open(o.dataDir, filestorage.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("opening -data %s: %w", o.dataDir, err)
	}
	tr, err := tcptransport.Listen(o.listen, tcptransport.Config{
		ID:        raft.NodeID(o.id),
		ClusterID: o.cluster,
		TLS:       tlsCfg,
		Logger:    logger,
	})
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("raft listener on -listen %s: %w", o.listen, err)
	}
	return st, tr, nil
}

// loadTLS builds the transport's mutual TLS configuration from the
// certificate flags, or returns nil if they are not set.
func loadTLS(o options) (*tls.Config, error) {
	if o.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	pemBytes, err := os.ReadFile(o.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("-tls-ca %s holds no PEM certificate", o.tlsCA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}, nil
}

// parseIDList parses "1=host:port,2=host:port".
func parseIDList(flagName, s string) (map[raft.NodeID]string, error) {
	out := make(map[raft.NodeID]string)
	if s == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || err != nil || id == 0 {
			return nil, fmt.Errorf("-%s: %q is not id=host:port with a positive id", flagName, item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("-%s: %q: %v", flagName, item, err)
		}
		if strings.Contains(addr, addrSep) {
			return nil, fmt.Errorf("-%s: %q: an address may not contain %q", flagName, item, addrSep)
		}
		if _, dup := out[raft.NodeID(id)]; dup {
			return nil, fmt.Errorf("-%s: node %d listed twice", flagName, id)
		}
		out[raft.NodeID(id)] = addr
	}
	return out, nil
}

// checkHostPort checks that addr is host:port with a fixed port: other
// nodes store it in the configuration and must find this node there again
// after a restart.
func checkHostPort(flagName, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-%s %q: %v", flagName, addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("-%s %q: needs a fixed port (1-65535): other nodes keep this address in the configuration", flagName, addr)
	}
	if strings.Contains(addr, addrSep) {
		return fmt.Errorf("-%s %q: may not contain %q", flagName, addr, addrSep)
	}
	return nil
}

// clusterPeers returns the bootstrap configuration from -peers and
// -peers-http, which every initial member must be given identically.
func clusterPeers(o options) ([]raft.Server, error) {
	peers, err := parseIDList("peers", o.peers)
	if err != nil {
		return nil, err
	}
	peersHTTP, err := parseIDList("peers-http", o.peersHTTP)
	if err != nil {
		return nil, err
	}
	if len(peers) == 0 {
		if len(peersHTTP) > 0 {
			return nil, errors.New("-peers-http only makes sense with -peers")
		}
		return nil, nil
	}
	self := raft.NodeID(o.id)
	if _, ok := peers[self]; !ok {
		return nil, fmt.Errorf("-peers must include this node (%d)", o.id)
	}
	if peers[self] != o.listen {
		return nil, fmt.Errorf("-peers gives node %d the address %s but -listen is %s", o.id, peers[self], o.listen)
	}
	if len(peersHTTP) > 0 {
		for id := range peers {
			if _, ok := peersHTTP[id]; !ok {
				return nil, fmt.Errorf("-peers-http lacks node %d: list every member of -peers or none", id)
			}
		}
		for id := range peersHTTP {
			if _, ok := peers[id]; !ok {
				return nil, fmt.Errorf("-peers-http lists node %d, which is not in -peers", id)
			}
		}
		if peersHTTP[self] != o.httpAddr {
			return nil, fmt.Errorf("-peers-http gives node %d the address %s but -http is %s", o.id, peersHTTP[self], o.httpAddr)
		}
	}
	out := make([]raft.Server, 0, len(peers))
	for id, addr := range peers {
		out = append(out, raft.Server{ID: id, Addr: joinAddr(addr, peersHTTP[id]), Suffrage: raft.Voter})
	}
	// Every initial member must build the same bootstrap entry.
	slices.SortFunc(out, func(a, b raft.Server) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// checkProcessFlags validates the multi-process flags.
func checkProcessFlags(o options) error {
	if o.listen == "" {
		return errors.New("-listen is required with -id")
	}
	if o.dataDir == "" {
		return errors.New("-data is required with -id: a node must keep its log across restarts")
	}
	if o.peers != "" && o.join != "" {
		return errors.New("use -peers to bootstrap a new cluster or -join to join a running one, not both")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") || (o.tlsCert == "") != (o.tlsCA == "") {
		return errors.New("mutual TLS needs -tls-cert, -tls-key and -tls-ca together")
	}
	if o.cluster == "" || len(o.cluster) > 255 {
		return errors.New("-cluster must be 1 to 255 bytes")
	}
	if err := checkHostPort("listen", o.listen); err != nil {
		return err
	}
	if err := checkHostPort("http", o.httpAddr); err != nil {
		return err
	}
	_, err := clusterPeers(o)
	return err
}

// parseLogLevel parses the -log flag.
func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("-log %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// runProcess runs one node of a multi-process cluster until ctx ends or the
// node fails.
func runProcess(ctx context.Context, o options, out, errOut io.Writer) error {
	if err := checkProcessFlags(o); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx) // ends the join and reporting goroutines on return
	defer cancel()
	level, err := parseLogLevel(o.logLevel)
	if err != nil {
		return err
	}
	peers, _ := clusterPeers(o) // checked above
	logger := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	id := raft.NodeID(o.id)
	self := joinAddr(o.listen, o.httpAddr)

	st, tr, err := backends(o, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	state, err := st.Load()
	if err != nil {
		tr.Close()
		return fmt.Errorf("loading -data %s: %w", o.dataDir, err)
	}
	fresh := state.HardState.IsZero() && len(state.Entries) == 0 && state.Snapshot.Index == 0
	if fresh && len(peers) == 0 && o.join == "" {
		tr.Close()
		return fmt.Errorf("-data %s is empty: give -peers to start a new cluster or -join to join a running one", o.dataDir)
	}

	httpLn, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		tr.Close()
		return fmt.Errorf("HTTP listener on -http %s: %w", o.httpAddr, err)
	}
	defer httpLn.Close()

	cfg := raft.DefaultConfig()
	cfg.ID = id
	cfg.Peers = peers
	cfg.Logger = logger
	if o.snapshotEvery > 0 {
		cfg.SnapshotThreshold = o.snapshotEvery
		cfg.TrailingEntries = min(cfg.TrailingEntries, o.snapshotEvery/2)
	}
	store := kvstore.New(0)
	str := splitAddrTransport{Transport: tr}
	node, err := raft.NewNode(cfg, store, st, str)
	if err != nil {
		tr.Close()
		return err
	}
	defer node.Stop()

	switch {
	case !fresh:
		fmt.Fprintf(out, "node %d: restarting from %s (term %d, %d log entries, snapshot at %d)", id, o.dataDir,
			state.HardState.Term, len(state.Entries), state.Snapshot.Index)
		if len(peers) > 0 {
			fmt.Fprintf(out, "; -peers ignored: the stored configuration wins")
		}
		fmt.Fprintln(out)
	case len(peers) > 0:
		fmt.Fprintf(out, "node %d: bootstrapping a new cluster of %d from -peers\n", id, len(peers))
	default:
		fmt.Fprintf(out, "node %d: empty node; will ask %s to add it\n", id, o.join)
	}

	peersHTTP, _ := parseIDList("peers-http", o.peersHTTP)
	peerURL := func(pid raft.NodeID) string {
		if s, ok := node.Status().Config.Server(pid); ok {
			if _, h := splitAddr(s.Addr); h != "" {
				return "http://" + h
			}
		}
		if h := peersHTTP[pid]; h != "" {
			return "http://" + h
		}
		return ""
	}
	srv := &http.Server{
		Handler:           httpapi.New(node, store, httpapi.Options{PeerURL: peerURL, Timeout: o.timeout}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Fprintf(out, "node %d: raft on %s, HTTP API on http://%s, data in %s\n", id, tr.Addr(), httpLn.Addr(), o.dataDir)

	go reportChanges(ctx, node, out)

	joinErr := make(chan error, 1)
	if o.join != "" {
		go func() {
			err := joinCluster(ctx, o.join, id, self, out)
			if err != nil {
				joinErr <- err
				return
			}
			fmt.Fprintf(out, "node %d: joined the cluster as a voter\n", id)
		}()
	}

	select {
	case <-ctx.Done():
		fmt.Fprintf(out, "node %d: stopping\n", id)
		return nil
	case <-node.Done():
		return fmt.Errorf("node stopped: %w", node.Err())
	case err := <-serveErr:
		return fmt.Errorf("HTTP server: %w", err)
	case err := <-joinErr:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// reportChanges prints every change of role, term or leader until ctx ends
// or the node stops.
func reportChanges(ctx context.Context, node *raft.Node, out io.Writer) {
	var last raft.Observation
	for {
		obs, changed := node.Changes()
		if obs.Role != last.Role || obs.Leader != last.Leader {
			who := "no leader known"
			if obs.Leader != raft.None {
				who = fmt.Sprintf("leader is node %d", obs.Leader)
			}
			fmt.Fprintf(out, "node %d: %s, term %d, %s\n", obs.ID, obs.Role, obs.Term, who)
			last = obs
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-node.Done():
			return
		}
	}
}

// joinCluster asks the cluster behind the HTTP address through to add this
// node: first as a learner, which receives the log without counting toward commits, and
// then as a voter, which the leader grants once the learner has caught up.
// Both requests are idempotent, so a node restarted with -join finishes an
// interrupted join, and a node that is already a voter is left as it is.
// It retries on 503, 504 and connection errors until ctx ends.
func joinCluster(ctx context.Context, through string, id raft.NodeID, addr string, out io.Writer) error {
	base := through
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	base = strings.TrimSuffix(base, "/")
	j := joiner{ctx: ctx, client: &http.Client{Timeout: 30 * time.Second}, id: id, through: through, out: out}

	for _, voter := range []bool{false, true} {
		what := "learner"
		if voter {
			what = "voter"
		}
		req := fmt.Sprintf(`{"id":%d,"addr":%q,"voter":%t}`, id, addr, voter)
		if _, err := j.call(http.MethodPost, base+"/members", req, "adding it as a "+what); err != nil {
			return err
		}
		fmt.Fprintf(out, "node %d: the cluster has it as a %s\n", id, what)
	}
	return nil
}

// joiner makes the HTTP requests of joinCluster.
type joiner struct {
	ctx     context.Context
	client  *http.Client
	id      raft.NodeID
	through string
	out     io.Writer
}

// call makes one request (following redirects to the leader) until it
// answers 200, retrying on 503, 504 and connection errors, and returns the
// response body.
func (j joiner) call(method, url, body, what string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(j.ctx, method, url, strings.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("-join %s: %w", j.through, err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := j.client.Do(req)
		var msg []byte
		if err == nil {
			msg, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			switch {
			case err != nil:
			case resp.StatusCode == http.StatusOK:
				return msg, nil
			case resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusGatewayTimeout:
				return nil, fmt.Errorf("-join %s: %s: %s: %s", j.through, what, resp.Status, strings.TrimSpace(string(msg)))
			}
		}
		if j.ctx.Err() != nil {
			return nil, j.ctx.Err()
		}
		if attempt%10 == 0 {
			reason := strings.TrimSpace(string(msg))
			if err != nil {
				reason = err.Error()
			}
			fmt.Fprintf(j.out, "node %d: %s: not done yet (%s); retrying\n", j.id, what, reason)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-j.ctx.Done():
			t.Stop()
			return nil, j.ctx.Err()
		case <-t.C:
		}
	}
}
