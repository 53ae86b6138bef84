package raft

import (
	"fmt"
	"testing"
	"time"
)

func TestSmokeCluster(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader(5 * time.Second)
	var want []string
	for i := range 20 {
		cmd := fmt.Sprintf("c%d", i)
		if _, err := c.propose(lead, cmd); err != nil {
			t.Fatal(err)
		}
		want = append(want, cmd)
	}
	c.waitApplied(want, 5*time.Second)
}
