package main

// This file plays the network simulator the replica was written for: a
// broker owning one Unix socket per replica, the replicas as subprocesses,
// clients sending get/put requests, message drops, a partition and kills.
// The answers are checked for linearizability with porcupine.

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// replicaBinary builds the replica once per test run.
func replicaBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "jrbin")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "replica")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// testSeconds is how long each simulation drives clients
// (JSONREPLICA_SECONDS, default 6).
func testSeconds(t *testing.T) time.Duration {
	if s := os.Getenv("JSONREPLICA_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("JSONREPLICA_SECONDS=%q is not a positive integer", s)
		}
		return time.Duration(n) * time.Second
	}
	return 6 * time.Second
}

// envMsg is the part of a message the broker and clients look at.
type envMsg struct {
	Src    string  `json:"src"`
	Dst    string  `json:"dst"`
	Leader string  `json:"leader"`
	Type   string  `json:"type"`
	MID    string  `json:"MID"`
	Value  *string `json:"value"`
}

type rconn struct {
	mu sync.Mutex
	c  net.Conn
}

func (r *rconn) write(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	r.c.Write(b)
}

// sim is the simulated environment.
type sim struct {
	t       *testing.T
	dir     string
	ids     []string
	launch  time.Time
	clients map[string]chan envMsg

	mu          sync.Mutex
	rng         *rand.Rand
	conns       map[string]*rconn
	procs       map[string]*exec.Cmd
	exited      map[string]chan struct{}
	dead        map[string]bool
	group       map[string]int
	drop        float64
	replicaMsgs int
	droppedMsgs int
	early       int
	malformed   []string
	lastLeader  map[string]string
	answers     map[string]int // replica/MID -> ok replies sent
	oks         map[string]int // MID -> ok replies from all replicas
}

func newSim(t *testing.T, n int, clientIDs []string, seed uint64) *sim {
	bin := replicaBinary(t)
	dir, err := os.MkdirTemp("", "jr") // short: Unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{
		t: t, dir: dir, clients: make(map[string]chan envMsg),
		rng: rand.New(rand.NewPCG(seed, 7)), conns: make(map[string]*rconn), procs: make(map[string]*exec.Cmd),
		exited: make(map[string]chan struct{}), dead: make(map[string]bool), group: make(map[string]int),
		lastLeader: make(map[string]string), answers: make(map[string]int), oks: make(map[string]int),
	}
	for i := range n {
		s.ids = append(s.ids, fmt.Sprintf("%04X", i))
	}
	for _, c := range clientIDs {
		s.clients[c] = make(chan envMsg, 1024)
	}
	lns := make(map[string]*net.UnixListener)
	for _, id := range s.ids {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, id), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
	}
	t.Cleanup(func() {
		s.mu.Lock()
		for id, p := range s.procs {
			if !s.dead[id] {
				syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			}
		}
		exited := s.exited
		s.mu.Unlock()
		for _, ch := range exited {
			<-ch
		}
		for _, ln := range lns {
			ln.Close()
		}
		s.mu.Lock()
		for _, c := range s.conns {
			c.c.Close()
		}
		s.mu.Unlock()
		os.RemoveAll(dir)
	})
	// Launch every replica, then accept their connections one by one.
	s.launch = time.Now()
	for _, id := range s.ids {
		args := []string{id}
		for _, o := range s.ids {
			if o != id {
				args = append(args, o)
			}
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		s.procs[id], s.exited[id] = cmd, done
	}
	for _, id := range s.ids {
		lns[id].SetDeadline(time.Now().Add(20 * time.Second))
		c, err := lns[id].Accept()
		if err != nil {
			t.Fatalf("replica %s did not connect: %v", id, err)
		}
		s.conns[id] = &rconn{c: c}
	}
	for _, id := range s.ids {
		go s.readLoop(id, s.conns[id].c)
	}
	return s
}

func (s *sim) readLoop(id string, c net.Conn) {
	fr := newFrameReader(c)
	for {
		frame, err := fr.next()
		if err != nil {
			return
		}
		var m envMsg
		if err := json.Unmarshal(frame, &m); err != nil || m.Src != id || len(m.Dst) != 4 || len(m.Leader) != 4 || m.Type == "" {
			s.mu.Lock()
			s.malformed = append(s.malformed, string(frame[:min(len(frame), 200)]))
			s.mu.Unlock()
			continue
		}
		raw := append(slices.Clone(frame), '\n')
		s.mu.Lock()
		s.lastLeader[id] = m.Leader
		if ch, ok := s.clients[m.Dst]; ok {
			if m.Type == "ok" {
				s.answers[id+"/"+m.MID]++
				s.oks[m.MID]++
			}
			s.mu.Unlock()
			select {
			case ch <- m:
			default:
			}
			continue
		}
		targets := []string{m.Dst}
		if m.Dst == Broadcast {
			targets = slices.DeleteFunc(slices.Clone(s.ids), func(x string) bool { return x == id })
		}
		var out []*rconn
		for _, dst := range targets {
			s.replicaMsgs++
			if time.Since(s.launch) < 200*time.Millisecond {
				s.early++
			}
			conn := s.conns[dst]
			if conn == nil || s.dead[dst] || s.dead[id] || s.group[id] != s.group[dst] || s.rng.Float64() < s.drop {
				s.droppedMsgs++
				continue
			}
			out = append(out, conn)
		}
		s.mu.Unlock()
		for _, conn := range out {
			conn.write(raw)
		}
	}
}

// toReplica delivers a client message (clients are never cut off).
func (s *sim) toReplica(id string, m any) {
	b, _ := json.Marshal(m)
	s.mu.Lock()
	conn, dead := s.conns[id], s.dead[id]
	s.mu.Unlock()
	if conn != nil && !dead {
		conn.write(append(b, '\n'))
	}
}

func (s *sim) setDrop(p float64) { s.mu.Lock(); s.drop = p; s.mu.Unlock() }

func (s *sim) partition(minority []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.group)
	for _, id := range minority {
		s.group[id] = 1
	}
}

func (s *sim) heal() { s.partition(nil) }

// kill sends SIGTERM to a replica's process group and waits for it to exit.
func (s *sim) kill(id string) {
	s.mu.Lock()
	s.dead[id] = true
	p, done := s.procs[id], s.exited[id]
	s.mu.Unlock()
	syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("replica %s still running 10s after SIGTERM", id)
	}
}

// leaderClaim returns the leader the live replicas last claimed, if they
// agree on a live one.
func (s *sim) leaderClaim() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	claim := ""
	for _, id := range s.ids {
		if s.dead[id] {
			continue
		}
		l := s.lastLeader[id]
		if claim == "" {
			claim = l
		}
		if l != claim {
			return ""
		}
	}
	if claim == Broadcast || s.dead[claim] {
		return ""
	}
	return claim
}

// kvInput and kvOutput are porcupine operations on one key.
type kvInput struct {
	put        bool
	key, value string
}

type kvOutput struct{ value string }

var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.put {
			return true, in.value
		}
		return output.(kvOutput).value == state.(string), state
	},
}

// client issues requests the way the simulator's clients do: to the leader
// it believes in, following redirects, retrying the same MID elsewhere on
// fail or silence.
type client struct {
	s      *sim
	idx    int
	id     string
	in     chan envMsg
	leader string
	n      int
	rng    *rand.Rand
}

type opRecord struct {
	op      porcupine.Operation
	ok      bool
	latency time.Duration
}

func (c *client) do(put bool, key, value string, giveUp time.Time) opRecord {
	c.n++
	mid := fmt.Sprintf("%s-%d", c.id, c.n)
	req := map[string]any{"src": c.id, "leader": Broadcast, "MID": mid, "key": key}
	if put {
		req["type"], req["value"] = "put", value
	} else {
		req["type"] = "get"
	}
	target := c.leader
	if target == "" || target == Broadcast {
		target = c.s.ids[c.rng.IntN(len(c.s.ids))]
	}
	start := time.Now()
	rec := opRecord{op: porcupine.Operation{ClientId: c.idx, Input: kvInput{put: put, key: key, value: value}, Call: int64(time.Since(c.s.launch))}}
	for time.Now().Before(giveUp) {
		req["dst"] = target
		c.s.toReplica(target, req)
		timer := time.NewTimer(500 * time.Millisecond)
	wait:
		for {
			select {
			case m := <-c.in:
				if m.MID != mid {
					continue // a late answer to an earlier try
				}
				if len(m.Leader) == 4 && m.Leader != Broadcast {
					c.leader = m.Leader
				}
				switch m.Type {
				case "ok":
					timer.Stop()
					rec.ok, rec.latency = true, time.Since(start)
					rec.op.Return = int64(time.Since(c.s.launch))
					if m.Value != nil {
						rec.op.Output = kvOutput{value: *m.Value}
					} else {
						rec.op.Output = kvOutput{}
					}
					return rec
				case "redirect":
					if m.Leader != Broadcast && m.Leader != target {
						target = m.Leader
					} else {
						target = c.s.ids[c.rng.IntN(len(c.s.ids))]
						time.Sleep(20 * time.Millisecond)
					}
				default: // fail
					time.Sleep(20 * time.Millisecond)
					target = c.s.ids[c.rng.IntN(len(c.s.ids))]
				}
				timer.Stop()
				break wait
			case <-timer.C:
				target = c.s.ids[c.rng.IntN(len(c.s.ids))]
				break wait
			}
		}
	}
	// Never acknowledged: a put may still take effect at any later time.
	rec.op.Return = math.MaxInt64
	rec.op.Output = kvOutput{}
	return rec
}

// workload runs clients until stop, each writing its own keys with
// increasing values and reading everyone's.
type workload struct {
	mu      sync.Mutex
	records []opRecord
	acked   map[string]string   // key -> last acknowledged value
	pending map[string][]string // key -> values of puts never acknowledged
}

func runClients(s *sim, ids []string, stop time.Time) *workload {
	w := &workload{acked: map[string]string{}, pending: map[string][]string{}}
	var keys []string
	for _, id := range ids {
		keys = append(keys, id+"-a", id+"-b")
	}
	var wg sync.WaitGroup
	for i, id := range ids {
		c := &client{s: s, idx: i, id: id, in: s.clients[id], rng: rand.New(rand.NewPCG(uint64(i), 99))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := 1; time.Now().Before(stop); v++ {
				var rec opRecord
				if c.rng.IntN(2) == 0 {
					key := id + []string{"-a", "-b"}[c.rng.IntN(2)]
					val := fmt.Sprintf("%s=%d", key, v)
					rec = c.do(true, key, val, time.Now().Add(10*time.Second))
					w.mu.Lock()
					if rec.ok {
						w.acked[key] = val
					} else {
						w.pending[key] = append(w.pending[key], val)
					}
					w.mu.Unlock()
				} else {
					rec = c.do(false, keys[c.rng.IntN(len(keys))], "", time.Now().Add(10*time.Second))
				}
				w.mu.Lock()
				if rec.ok || rec.op.Input.(kvInput).put {
					w.records = append(w.records, rec)
				}
				w.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return w
}

// finalReads reads every key once more after the faults are over: each
// must show its last acknowledged put (or a later unacknowledged one).
func (w *workload) finalReads(t *testing.T, s *sim, reader string) {
	c := &client{s: s, idx: 99, id: reader, in: s.clients[reader], rng: rand.New(rand.NewPCG(5, 5))}
	for key, want := range w.acked {
		rec := c.do(false, key, "", time.Now().Add(30*time.Second))
		if !rec.ok {
			t.Errorf("final read of %s never answered", key)
			continue
		}
		w.records = append(w.records, rec)
		got := rec.op.Output.(kvOutput).value
		if got != want && !slices.Contains(w.pending[key], got) {
			t.Errorf("acknowledged put lost: %s reads %q, last acknowledged %q", key, got, want)
		}
	}
}

// check verifies the history and the environment's rules and reports the
// numbers the simulator scores.
func (w *workload) check(t *testing.T, s *sim) {
	var ops []porcupine.Operation
	var lat []time.Duration
	okCount := 0
	for _, r := range w.records {
		ops = append(ops, r.op)
		if r.ok {
			okCount++
			lat = append(lat, r.latency)
		}
	}
	if okCount == 0 {
		t.Fatal("no request was ever answered")
	}
	switch res := porcupine.CheckOperationsTimeout(kvModel, ops, 60*time.Second); res {
	case porcupine.Illegal:
		t.Errorf("history of %d operations is not linearizable: a wrong answer was given", len(ops))
	case porcupine.Unknown:
		t.Logf("linearizability check timed out on %d operations", len(ops))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, n := range s.answers {
		if n > 1 {
			t.Errorf("replica/MID %s answered ok %d times", k, n)
		}
	}
	dupOK := 0
	for _, n := range s.oks {
		dupOK += n - 1
	}
	if len(s.malformed) > 0 {
		t.Errorf("%d malformed messages, first: %s", len(s.malformed), s.malformed[0])
	}
	if s.early > 0 {
		t.Errorf("%d replica messages sent in the first 200ms", s.early)
	}
	slices.Sort(lat)
	t.Logf("%d ops answered ok, %d never acknowledged, %d extra oks from a second replica after a retry; replica-to-replica messages: %d (%d dropped), %.1f per answered op; latency median %v, p90 %v",
		okCount, len(ops)-okCount, dupOK, s.replicaMsgs, s.droppedMsgs, float64(s.replicaMsgs)/float64(okCount),
		lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*9/10].Round(10*time.Microsecond))
}

func clientIDs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("C%03X", i))
	}
	return out
}

func waitLeaderClaim(t *testing.T, s *sim) string {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l := s.leaderClaim(); l != "" {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("replicas never agreed on a live leader")
	return ""
}

func TestSimulatorWithoutFaults(t *testing.T) {
	ids := clientIDs(5)
	s := newSim(t, 5, ids, 1)
	w := runClients(s, ids[:4], time.Now().Add(testSeconds(t)))
	w.finalReads(t, s, ids[4])
	w.check(t, s)
}

func TestSimulatorWithDropsPartitionAndKills(t *testing.T) {
	d := testSeconds(t)
	ids := clientIDs(5)
	s := newSim(t, 5, ids, 2)
	s.setDrop(0.3)
	stop := time.Now().Add(d)
	faults := make(chan struct{})
	go func() {
		defer close(faults)
		time.Sleep(d / 5)
		// Cut the leader and one follower off from the other three.
		lead := waitLeaderClaim(t, s)
		if lead == "" {
			return
		}
		minority := []string{lead}
		for _, id := range s.ids {
			if id != lead {
				minority = append(minority, id)
				break
			}
		}
		t.Logf("partition: %v cut off", minority)
		s.partition(minority)
		time.Sleep(d / 5)
		s.heal()
		time.Sleep(d / 5)
		if lead = waitLeaderClaim(t, s); lead == "" {
			return
		}
		t.Logf("killing leader %s", lead)
		s.kill(lead)
		time.Sleep(d / 10)
		// And one more replica: 3 of 5 remain.
		for _, id := range s.ids {
			s.mu.Lock()
			dead := s.dead[id]
			s.mu.Unlock()
			if !dead {
				t.Logf("killing %s", id)
				s.kill(id)
				break
			}
		}
	}()
	w := runClients(s, ids[:4], stop)
	<-faults
	s.setDrop(0)
	w.finalReads(t, s, ids[4])
	if l := waitLeaderClaim(t, s); l == "" {
		t.Fatal("no leader after the faults")
	}
	w.check(t, s)
}

func TestCheckerCatchesWrongAnswers(t *testing.T) {
	// The harness's model must reject a stale read and accept a read
	// concurrent with the write, or its verdicts mean nothing.
	put := porcupine.Operation{Input: kvInput{put: true, key: "k", value: "1"}, Call: 0, Output: kvOutput{}, Return: 10}
	stale := porcupine.Operation{ClientId: 1, Input: kvInput{key: "k"}, Call: 20, Output: kvOutput{value: ""}, Return: 30}
	if porcupine.CheckOperations(kvModel, []porcupine.Operation{put, stale}) {
		t.Fatal("a read after an acknowledged put that misses it was accepted")
	}
	concurrent := porcupine.Operation{ClientId: 1, Input: kvInput{key: "k"}, Call: 5, Output: kvOutput{value: ""}, Return: 30}
	if !porcupine.CheckOperations(kvModel, []porcupine.Operation{put, concurrent}) {
		t.Fatal("a read concurrent with the put was rejected")
	}
	pending := porcupine.Operation{Input: kvInput{put: true, key: "k", value: "2"}, Call: 40, Output: kvOutput{}, Return: math.MaxInt64}
	late := porcupine.Operation{ClientId: 1, Input: kvInput{key: "k"}, Call: 50, Output: kvOutput{value: "2"}, Return: 60}
	if !porcupine.CheckOperations(kvModel, []porcupine.Operation{put, pending, late}) {
		t.Fatal("a read of an unacknowledged put that may have happened was rejected")
	}
}
