package raft

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID = 1
	cfg.Peers = []Server{{ID: 1}, {ID: 2}, {ID: 3}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig with ID and Peers: %v", err)
	}
	if cfg.HeartbeatTicks*3 > cfg.ElectionTicks {
		t.Fatalf("default heartbeat %d is not <= election %d / 3", cfg.HeartbeatTicks, cfg.ElectionTicks)
	}
	// A node joining an existing cluster has no peers.
	cfg.Peers = nil
	if err := cfg.Validate(); err != nil {
		t.Fatalf("joining node config: %v", err)
	}
}

func TestConfigValidateRejectsNonsense(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*Config)
		want  string // substring of the error
	}{
		{"zero ID", func(c *Config) { c.ID = 0; c.Peers = nil }, "ID must be non-zero"},
		{"zero tick interval", func(c *Config) { c.TickInterval = 0 }, "TickInterval must be positive"},
		{"negative tick interval", func(c *Config) { c.TickInterval = -time.Millisecond }, "TickInterval must be positive"},
		{"zero election ticks", func(c *Config) { c.ElectionTicks = 0 }, "ElectionTicks must be positive"},
		{"negative election ticks", func(c *Config) { c.ElectionTicks = -5 }, "ElectionTicks must be positive"},
		{"zero heartbeat ticks", func(c *Config) { c.HeartbeatTicks = 0 }, "HeartbeatTicks must be positive"},
		{"negative heartbeat ticks", func(c *Config) { c.HeartbeatTicks = -1 }, "HeartbeatTicks must be positive"},
		{"heartbeat equal to election", func(c *Config) { c.HeartbeatTicks, c.ElectionTicks = 10, 10 }, "at most ElectionTicks/3"},
		{"heartbeat above election/3", func(c *Config) { c.HeartbeatTicks, c.ElectionTicks = 4, 10 }, "at most ElectionTicks/3"},
		{"self missing from peers", func(c *Config) { c.Peers = []Server{{ID: 2}, {ID: 3}} }, "must include this node (ID 1)"},
		{"duplicate peer IDs", func(c *Config) { c.Peers = []Server{{ID: 1}, {ID: 2}, {ID: 2}} }, "server 2 twice"},
		{"peer with ID 0", func(c *Config) { c.Peers = []Server{{ID: 1}, {ID: 0}} }, "ID 0"},
		{"no voters", func(c *Config) { c.Peers = []Server{{ID: 1, Suffrage: Learner}} }, "at least one voter"},
		{"bad suffrage", func(c *Config) { c.Peers = []Server{{ID: 1, Suffrage: 9}} }, "invalid suffrage"},
		{"zero message size", func(c *Config) { c.MaxSizePerMsg = 0 }, "MaxSizePerMsg must be positive"},
		{"zero inflight", func(c *Config) { c.MaxInflightMsgs = 0 }, "MaxInflightMsgs must be positive"},
		{"negative inflight bytes", func(c *Config) { c.MaxInflightBytes = -1 }, "MaxInflightBytes must be 0"},
		{"negative uncommitted bytes", func(c *Config) { c.MaxUncommittedBytes = -1 }, "MaxUncommittedBytes must be 0"},
		{"inflight bytes below a message", func(c *Config) { c.MaxInflightBytes = c.MaxSizePerMsg - 1 }, "at least MaxSizePerMsg"},
		{"zero apply batch", func(c *Config) { c.MaxApplyBatchBytes = 0 }, "MaxApplyBatchBytes must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ID = 1
			cfg.Peers = []Server{{ID: 1}, {ID: 2}, {ID: 3}}
			tc.tweak(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("Validate accepted %+v", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "raft: config: ") {
				t.Fatalf("error %q lacks the raft: config: prefix", err)
			}
			// NewCore and NewNode refuse the same config.
			if _, err := NewCore(cfg, State{}, nil); err == nil {
				t.Fatal("NewCore accepted an invalid config")
			}
			if _, err := NewNode(cfg, &counterSM{}, NewMemoryStorage(), NewNetwork(1).Transport(cfg.ID)); err == nil {
				t.Fatal("NewNode accepted an invalid config")
			}
		})
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{ID: 1, Peers: []Server{{ID: 2}}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"TickInterval", "ElectionTicks", "HeartbeatTicks", "must include this node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestNewNodeRejectsMissingPlugins(t *testing.T) {
	cfg := testConfig(1)
	cfg.Peers = []Server{{ID: 1}}
	nw := NewNetwork(1)
	if _, err := NewNode(cfg, nil, NewMemoryStorage(), nw.Transport(1)); err == nil {
		t.Fatal("nil StateMachine accepted")
	}
	if _, err := NewNode(cfg, &counterSM{}, nil, nw.Transport(1)); err == nil {
		t.Fatal("nil Storage accepted")
	}
	if _, err := NewNode(cfg, &counterSM{}, NewMemoryStorage(), nil); err == nil {
		t.Fatal("nil Transport accepted")
	}
}
