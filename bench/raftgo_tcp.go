package main

import (
	"github.com/raftgo/raft"
	"github.com/raftgo/raft/tcptransport"
)

func init() {
	raftgoTCP = func() raftgoOptions {
		return raftgoOptions{newTransports: func(ids []raft.NodeID) ([]raft.Transport, []raft.Server, func(), error) {
			var trs []raft.Transport
			var peers []raft.Server
			var opened []*tcptransport.Transport
			closeAll := func() {
				for _, t := range opened {
					t.Close()
				}
			}
			for _, id := range ids {
				t, err := tcptransport.Listen("127.0.0.1:0", tcptransport.Config{ID: id, ClusterID: "bench"})
				if err != nil {
					closeAll()
					return nil, nil, nil, err
				}
				opened = append(opened, t)
				trs = append(trs, t)
				peers = append(peers, raft.Server{ID: id, Addr: t.Addr().String()})
			}
			// The nodes own their transports (Stop closes them); closing
			// again is harmless.
			return trs, peers, closeAll, nil
		}}
	}
}
