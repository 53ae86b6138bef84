package filestorage

import "sort"

// termRun says that entries from first up to the next run's first (or the
// last index) have term term.
type termRun struct{ first, term uint64 }

// termIndex answers "what is the term of entry i" for the stored log
// without keeping the entries in memory: terms change rarely, so it keeps
// one run per term change.
//
// Invariant: runs[k].first < runs[k+1].first; runs cover comp+1..last.
type termIndex struct {
	runs []termRun
	last uint64
}

// at returns the term of entry i, if i is covered.
func (t *termIndex) at(i uint64) (uint64, bool) {
	if len(t.runs) == 0 || i < t.runs[0].first || i > t.last {
		return 0, false
	}
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first > i }) - 1
	return t.runs[k].term, true
}

// truncate drops every entry with index >= from.
func (t *termIndex) truncate(from uint64) {
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first >= from })
	t.runs = t.runs[:k]
	if from == 0 {
		t.last = 0
	} else {
		t.last = min(t.last, from-1)
	}
}

// add appends entry i (== last+1 unless the index is empty) of term term.
func (t *termIndex) add(i, term uint64) {
	if n := len(t.runs); n == 0 || t.runs[n-1].term != term {
		t.runs = append(t.runs, termRun{first: i, term: term})
	}
	t.last = i
}

// compact drops every entry with index <= to.
func (t *termIndex) compact(to uint64) {
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].first > to })
	if k > 0 && to < t.last && (k == len(t.runs) || t.runs[k].first > to+1) {
		// Run k-1 still covers to+1.
		t.runs[k-1].first = to + 1
		k--
	}
	t.runs = append(t.runs[:0], t.runs[k:]...)
	if len(t.runs) == 0 {
		t.last = 0
	}
}
