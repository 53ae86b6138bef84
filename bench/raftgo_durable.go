package main

import (
	"fmt"
	"path/filepath"

	"github.com/raftgo/raft"
	"github.com/raftgo/raft/filestorage"
)

func init() {
	raftgoDurable = func(dir string) raftgoOptions {
		return raftgoOptions{newStorage: func(id raft.NodeID) (raft.Storage, func() error, error) {
			st, err := filestorage.Open(filepath.Join(dir, fmt.Sprintf("raftgo-%d", id)), filestorage.Options{})
			if err != nil {
				return nil, nil, err
			}
			return st, st.Close, nil
		}}
	}
}
