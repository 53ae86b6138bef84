// Command kvexample is a replicated key-value service built on the raft
// library: the worked example of how to use it.
//
//	go run ./kvexample            3 nodes in this process, HTTP API on 127.0.0.1:8080-8082
//	go run ./kvexample -demo      scripted failover demo; exits when done
//	go run ./kvexample -id 1 ...  one node of a multi-process cluster (see docs/kvexample.md)
//
// See docs/kvexample.md for the HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/raftgo/raft"
)

// options are the command-line flags.
type options struct {
	demo     bool
	httpAddr string
	timeout  time.Duration

	// Multi-process mode.
	id        uint64
	listen    string
	peers     string
	peersHTTP string
	dataDir   string
	join      string
	tlsCert   string
	tlsKey    string
	tlsCA     string
	cluster   string
	logLevel  string

	snapshotEvery uint64
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("kvexample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.demo, "demo", false, "run the scripted failover demo and exit")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "HTTP API address (in-process mode: node 1's; nodes 2 and 3 take the next ports)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long one HTTP request waits for the cluster")
	fs.Uint64Var(&o.id, "id", 0, "this node's ID; selects multi-process mode")
	fs.StringVar(&o.listen, "listen", "", "raft TCP address of this node (multi-process mode)")
	fs.StringVar(&o.peers, "peers", "", "initial cluster, id=raftaddr,... including this node; the same on every initial member, ignored once -data holds state (multi-process mode)")
	fs.StringVar(&o.peersHTTP, "peers-http", "", "HTTP addresses of the -peers, id=httpaddr,..., the same on every initial member; followers redirect writes there")
	fs.StringVar(&o.dataDir, "data", "", "directory for durable storage (multi-process mode)")
	fs.StringVar(&o.join, "join", "", "HTTP address of a member to join the running cluster through (added as learner, then voter), instead of -peers")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate for mutual TLS between nodes")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for -tls-cert")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA bundle that peer certificates must chain to")
	fs.StringVar(&o.cluster, "cluster", "kvexample", "cluster name; nodes refuse peers with another (multi-process mode)")
	fs.StringVar(&o.logLevel, "log", "info", "raft and transport log level on stderr: debug, info, warn or error (multi-process mode)")
	fs.Uint64Var(&o.snapshotEvery, "snapshot-every", 0, "take a snapshot every N applied entries (0: the library default) (multi-process mode)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.timeout <= 0 {
		return o, fmt.Errorf("-timeout must be positive, got %v", o.timeout)
	}
	if o.demo && o.id != 0 {
		return o, errors.New("-demo runs its own in-process cluster; it cannot be combined with -id")
	}
	return o, nil
}

// run is main without the process exit, so tests can drive it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	switch {
	case o.demo:
		_, err := runDemo(ctx, stdout, raft.DefaultConfig())
		return err
	case o.id != 0:
		return runProcess(ctx, o, stdout, stderr)
	default:
		return serveLocal(ctx, o, stdout, nil)
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "kvexample:", err)
		os.Exit(1)
	}
}
