package tcptransport

// MaxLearnedPeers exposes maxLearnedPeers to the external tests.
const MaxLearnedPeers = maxLearnedPeers
