package raft

import "slices"

// VoteResult is the outcome of counting votes.
type VoteResult uint8

const (
	// VotePending: neither a majority for nor a majority against yet.
	VotePending VoteResult = iota
	// VoteWon: a majority of voters granted.
	VoteWon
	// VoteLost: a majority of voters rejected.
	VoteLost
)

// countVotes decides an election among voters from the votes received so
// far (true = granted). Votes from non-voters are ignored.
func countVotes(voters []NodeID, votes map[NodeID]bool) VoteResult {
	granted, rejected := 0, 0
	for _, id := range voters {
		v, ok := votes[id]
		switch {
		case !ok:
		case v:
			granted++
		default:
			rejected++
		}
	}
	q := len(voters)/2 + 1
	switch {
	case granted >= q:
		return VoteWon
	case rejected >= q:
		return VoteLost
	}
	return VotePending
}

// quorumIndex returns the highest index that a majority of voters have
// reached, given each voter's index from get. With no voters it returns 0.
func quorumIndex(voters []NodeID, get func(NodeID) uint64) uint64 {
	n := len(voters)
	if n == 0 {
		return 0
	}
	var stack [7]uint64
	idx := stack[:0]
	if n > len(stack) {
		idx = make([]uint64, 0, n)
	}
	for _, id := range voters {
		idx = append(idx, get(id))
	}
	slices.Sort(idx)
	// Sorted ascending: the element at n-q is held by at least q voters.
	return idx[n-(n/2+1)]
}
