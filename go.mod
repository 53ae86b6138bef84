module github.com/raftgo/raft

go 1.26
