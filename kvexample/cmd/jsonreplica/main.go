// Command jsonreplica is one replica of the key-value store in the network
// simulator the raft library grew from.
//
//	go build -o replica ./kvexample/cmd/jsonreplica
//	./replica <my_id> <other_ids...>
//
// IDs are 4-digit uppercase hex ("0000"); FFFF means broadcast or "leader
// unknown". The replica connects to the Unix stream socket named after its
// own ID in the working directory and exchanges compact JSON messages, each
// followed by a newline, with the simulator: client get/put requests and
// ok/fail/redirect replies carrying the request's MID, and raft traffic to
// the other replicas as messages of type "raft" whose "raft" field holds a
// batch of base64 raft.Message encodings. Every message states the
// replica's current belief about the leader. SIGTERM stops it at once.
// Set JSONREPLICA_DEBUG=1 to log to stderr.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/raftgo/raft"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "jsonreplica:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: replica <my_id> <other_ids...>")
	}
	self, err := parseID(args[0])
	if err != nil {
		return err
	}
	peers := []raft.Server{{ID: self}}
	for _, a := range args[1:] {
		id, err := parseID(a)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(peers, func(s raft.Server) bool { return s.ID == id }) {
			return fmt.Errorf("replica ID %s listed twice", a)
		}
		peers = append(peers, raft.Server{ID: id})
	}
	slices.SortFunc(peers, func(a, b raft.Server) int { return int(a.ID) - int(b.ID) })

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()

	conn, err := dial(args[0], 10*time.Second)
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("JSONREPLICA_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("replica", args[0])
	}
	cfg := replicaConfig(self, peers)
	cfg.Logger = logger
	r := newReplica(args[0], self, conn, cfg, logger)
	if err := r.start(); err != nil {
		return err
	}
	err = r.run()
	r.close()
	r.node.Stop()
	return err
}

// dial connects to the simulator's socket, retrying while it is not there
// yet.
func dial(path string, patience time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(patience)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connecting to %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
