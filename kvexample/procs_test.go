package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file runs kvexample binaries as separate processes on loopback TCP,
// for the end-to-end tests.

// buildKV builds the kvexample binary into a temporary directory, with the
// race detector when the test itself runs under it, and returns its path.
func buildKV(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the kvexample binary with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "kvexample")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goBin, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePorts returns n loopback addresses whose ports were free a moment
// ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var lns []net.Listener
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// proc is one kvexample process, restartable with the same arguments.
type proc struct {
	id       int
	bin      string
	args     []string
	raftAddr string
	httpAddr string
	logPath  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	runs int
}

// start launches the process; its stdout and stderr are appended to
// logPath. It is safe to call from any goroutine.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("node %d is already running", p.id)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	p.runs++
	fmt.Fprintf(logf, "=== run %d: %s %s\n", p.runs, p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting node %d: %w", p.id, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// mustStart starts the process or fails the test; only for the test's
// goroutine.
func (p *proc) mustStart(t *testing.T) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
}

// running reports whether the process is up (started and not exited).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig and waits up to wait for the process to exit, killing
// it if it has not. It returns false if the process was not running.
func (p *proc) signal(sig os.Signal, wait time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return false
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-done
	}
	return true
}

// kill stops the process with SIGKILL: no shutdown code runs.
func (p *proc) kill() bool { return p.signal(syscall.SIGKILL, 10*time.Second) }

// log returns what the process has written so far, all runs.
func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// procCluster is a set of kvexample processes.
type procCluster struct {
	t     *testing.T
	bin   string
	dir   string
	procs map[int]*proc
}

// newProcCluster prepares (without starting) n nodes that bootstrap one
// cluster; extra, if set, gives more arguments for node id.
func newProcCluster(t *testing.T, bin string, n int, extra func(id int) []string) *procCluster {
	t.Helper()
	c := &procCluster{t: t, bin: bin, dir: t.TempDir(), procs: make(map[int]*proc)}
	addrs := freePorts(t, 2*n)
	var peers, peersHTTP []string
	for i := 1; i <= n; i++ {
		peers = append(peers, fmt.Sprintf("%d=%s", i, addrs[2*i-2]))
		peersHTTP = append(peersHTTP, fmt.Sprintf("%d=%s", i, addrs[2*i-1]))
	}
	for i := 1; i <= n; i++ {
		args := []string{
			"-peers", strings.Join(peers, ","),
			"-peers-http", strings.Join(peersHTTP, ","),
		}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		c.add(i, addrs[2*i-2], addrs[2*i-1], args...)
	}
	t.Cleanup(c.stopAll)
	return c
}

// add prepares node id at the given addresses with extra arguments.
func (c *procCluster) add(id int, raftAddr, httpAddr string, extra ...string) *proc {
	args := []string{
		"-id", strconv.Itoa(id),
		"-listen", raftAddr,
		"-http", httpAddr,
		"-data", filepath.Join(c.dir, fmt.Sprintf("node%d", id)),
		"-timeout", "2s",
		"-log", "warn",
	}
	p := &proc{
		id: id, bin: c.bin, args: append(args, extra...),
		raftAddr: raftAddr, httpAddr: httpAddr,
		logPath: filepath.Join(c.dir, fmt.Sprintf("node%d.log", id)),
	}
	c.procs[id] = p
	return p
}

func (c *procCluster) startAll() {
	for id := 1; id <= len(c.procs); id++ {
		c.procs[id].mustStart(c.t)
	}
}

// stopAll stops every process with SIGTERM (SIGKILL if it lingers) and
// reports data races the processes found.
func (c *procCluster) stopAll() {
	for _, p := range c.procs {
		p.signal(syscall.SIGTERM, 10*time.Second)
	}
	for _, p := range c.procs {
		if strings.Contains(p.log(), "WARNING: DATA RACE") {
			c.t.Errorf("node %d reported a data race:\n%s", p.id, p.log())
		}
	}
}

// dumpLogs writes the processes' output to the test log.
func (c *procCluster) dumpLogs() {
	for id := 1; id <= len(c.procs); id++ {
		out := c.procs[id].log()
		if len(out) > 8000 {
			out = "...\n" + out[len(out)-8000:]
		}
		c.t.Logf("node %d output:\n%s", id, out)
	}
}

// nodeStatus is the part of GET /status the tests read.
type nodeStatus struct {
	ID      uint64 `json:"id"`
	Role    string `json:"role"`
	Term    uint64 `json:"term"`
	Leader  uint64 `json:"leader"`
	Commit  uint64 `json:"commit"`
	Applied uint64 `json:"applied"`
	Members []struct {
		ID       uint64 `json:"id"`
		Addr     string `json:"addr"`
		Suffrage string `json:"suffrage"`
	} `json:"members"`
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

func (p *proc) status() (nodeStatus, error) {
	var st nodeStatus
	resp, err := statusClient.Get("http://" + p.httpAddr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitFor polls cond every 20ms until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// agreedLeader returns the leader every running node names, with the
// leader itself reporting the leader role.
func (c *procCluster) agreedLeader() (int, error) {
	leader := 0
	for id, p := range c.procs {
		if !p.running() {
			continue
		}
		st, err := p.status()
		if err != nil {
			return 0, fmt.Errorf("node %d: %v", id, err)
		}
		if st.Leader == 0 {
			return 0, fmt.Errorf("node %d knows no leader", id)
		}
		if leader != 0 && int(st.Leader) != leader {
			return 0, fmt.Errorf("nodes disagree on the leader: %d and %d", leader, st.Leader)
		}
		leader = int(st.Leader)
		if int(st.ID) == leader && st.Role != "leader" {
			return 0, fmt.Errorf("node %d is named leader but is %s", id, st.Role)
		}
	}
	if leader == 0 {
		return 0, errors.New("no node is running")
	}
	return leader, nil
}

func (c *procCluster) waitLeader(timeout time.Duration) int {
	c.t.Helper()
	var leader int
	waitFor(c.t, timeout, "the running nodes agree on a leader", func() error {
		var err error
		leader, err = c.agreedLeader()
		return err
	})
	return leader
}

// httpDo makes a request with a body and returns the status code and
// response body. Redirects to the leader are followed.
func httpDo(ctx context.Context, client *http.Client, method, url, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" || method == http.MethodPut {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}
