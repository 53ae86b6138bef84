package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/kvexample/httpapi"
	"github.com/raftgo/raft/kvexample/memcluster"
)

// localAddrs returns the HTTP addresses of n in-process nodes: base for
// node 1 and the following ports for the others (all ephemeral if base's
// port is 0).
func localAddrs(base string, n int) ([]string, error) {
	host, portStr, err := net.SplitHostPort(base)
	if err != nil {
		return nil, fmt.Errorf("-http %q: %w", base, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("-http %q: bad port", base)
	}
	out := make([]string, n)
	for i := range out {
		p := port
		if port != 0 {
			p += i
		}
		out[i] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return out, nil
}

// serveLocal runs a 3-node cluster in this process with one HTTP API per
// node until ctx ends. ready, if set, receives the base URLs once serving.
func serveLocal(ctx context.Context, o options, out io.Writer, ready func(urls []string)) error {
	addrs, err := localAddrs(o.httpAddr, 3)
	if err != nil {
		return err
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	urls := make(map[raft.NodeID]string)
	var list []string
	for i, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("HTTP listener for node %d: %w", i+1, err)
		}
		lns = append(lns, ln)
		u := "http://" + ln.Addr().String()
		urls[raft.NodeID(i+1)] = u
		list = append(list, u)
	}
	c, err := memcluster.Start(3, raft.DefaultConfig(), uint64(time.Now().UnixNano()))
	if err != nil {
		return err
	}
	defer c.Close()

	peerURL := func(id raft.NodeID) string { return urls[id] }
	var servers []*http.Server
	errc := make(chan error, len(lns))
	for i, m := range c.Members() {
		srv := &http.Server{
			Handler:           httpapi.New(m.Node, m.Store, httpapi.Options{PeerURL: peerURL, Timeout: o.timeout}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		servers = append(servers, srv)
		go func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(lns[i])
	}
	lns = nil // the servers own them now

	fmt.Fprintf(out, "3 raft nodes running in this process on an in-memory network\n")
	for i, u := range list {
		fmt.Fprintf(out, "  node %d: %s\n", i+1, u)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	if lead, err := c.WaitLeader(wctx); err == nil {
		fmt.Fprintf(out, "node %d is the leader; followers redirect writes to it (307), so use curl -L\n", lead.ID)
	}
	wcancel()
	fmt.Fprintf(out, "try:\n")
	fmt.Fprintf(out, "  curl -L -X PUT --data-binary 'world' %s/kv/hello\n", list[0])
	fmt.Fprintf(out, "  curl %s/kv/hello\n", list[1])
	fmt.Fprintf(out, "  curl %s/status\n", list[2])
	fmt.Fprintf(out, "Ctrl-C to stop\n")
	if ready != nil {
		ready(list)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Shutdown(sctx)
		}()
	}
	wg.Wait()
	fmt.Fprintf(out, "stopped\n")
	return serveErr
}
