package tcptransport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/raftgo/raft"
)

// Config configures a Transport. ID and ClusterID are required; every other
// zero field takes the default documented on it.
type Config struct {
	// ID is the node this transport belongs to.
	ID raft.NodeID
	// ClusterID names the cluster (1 to 255 bytes). Peers presenting
	// another cluster ID are refused, so two clusters sharing hosts cannot
	// talk to each other by mistake.
	ClusterID string

	// AdvertiseAddr is the address ("host:port") at which peers can dial
	// this node. It is sent in the hello of every connection this node
	// dials, so that a node that does not know this one yet (one started
	// with an empty configuration, waiting to be added) can answer it.
	// Default: the listener's address, unless the listener is bound to an
	// unspecified IP (0.0.0.0 or ::, as with ":7001"), which peers cannot
	// dial; then nothing is advertised and such a node must set
	// AdvertiseAddr for nodes joining the cluster to reach it. It should
	// be the address the cluster configuration holds for this node.
	AdvertiseAddr string

	// TLS, when set, turns on mutual TLS: every connection is encrypted,
	// both ends present a certificate signed by a CA in RootCAs (ClientCAs
	// too, if set, for certificates presented to this node), and a
	// certificate must carry the DNS name PeerName(id) of the node it
	// claims to be. It must hold this node's certificate (Certificates or
	// GetCertificate). The transport clones it and sets ServerName,
	// ClientAuth and, if zero, MinVersion (TLS 1.3) itself.
	TLS *tls.Config
	// PeerName maps a node ID to the name its certificate must carry.
	// Default: NodeName.
	PeerName func(raft.NodeID) string

	// Logger receives connection events: refusals and closed connections
	// with their reason at Warn, reconnects at Info. Nil discards them.
	Logger *slog.Logger

	// QueueSize bounds the messages waiting to be written to one peer;
	// when the queue is full further messages to that peer are dropped
	// and counted (Raft resends). Default 1024.
	QueueSize int
	// QueueBytes bounds the encoded bytes (approximately) waiting for one
	// peer; a single message larger than it is still accepted into an
	// empty queue. Default 64 MiB.
	QueueBytes int
	// MaxBatchBytes is how many bytes of queued frames are gathered into
	// one write. Default 1 MiB.
	MaxBatchBytes int
	// MaxFrameSize bounds one encoded message, sent or received. A larger
	// outgoing message is dropped with a logged *FrameTooLargeError; a
	// peer announcing a larger incoming frame is disconnected. It must be
	// the same on every node and larger than raft's MaxSizePerMsg plus
	// overhead and than the largest snapshot chunk. Default 64 MiB.
	MaxFrameSize int

	// DialTimeout bounds connecting to a peer, TLS handshake and hello
	// included. Default 2s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds how long an accepted connection may take to
	// complete the TLS handshake and hello; slower ones are closed.
	// Default 5s.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds the accepted connections still in their
	// handshake; more are closed at once. Default 128.
	MaxPendingHandshakes int
	// WriteTimeout is how long one write of up to 1 MiB may make no
	// progress before the connection is considered hung and dropped.
	// Default 5s. Like ReadTimeout and IdleTimeout it is enforced with
	// deadlines renewed lazily, so a hung peer is noticed after between
	// the timeout and a quarter more.
	WriteTimeout time.Duration
	// ReadTimeout is how long the receiver waits for each 64 KiB (or the
	// rest) of a frame it has started to receive. Default 5s.
	ReadTimeout time.Duration
	// IdleTimeout closes an incoming connection on which nothing arrived
	// for that long. Senders write a keepalive frame after IdleTimeout/3
	// of silence, so only dead or hung peers hit it. Default 30s.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts to
	// connect to a peer: it starts at MinBackoff, doubles after each
	// failure up to MaxBackoff, and each wait is drawn at random from
	// [d/2, d) (jitter). Defaults 50ms and 2s.
	MinBackoff, MaxBackoff time.Duration
}

// NodeName is the default PeerName: "node-<id>", the DNS name a node's
// certificate carries.
func NodeName(id raft.NodeID) string { return "node-" + strconv.FormatUint(uint64(id), 10) }

// withDefaults fills zero fields and checks the result.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("tcptransport: config: "+format, args...))
	}
	if c.ID == raft.None {
		bad("ID must be non-zero")
	}
	if len(c.ClusterID) == 0 || len(c.ClusterID) > maxClusterIDLen {
		bad("ClusterID must be 1 to %d bytes, got %d", maxClusterIDLen, len(c.ClusterID))
	}
	if c.AdvertiseAddr != "" {
		if err := checkAdvertiseAddr(c.AdvertiseAddr); err != nil {
			bad("AdvertiseAddr: %v", err)
		}
	}
	if c.PeerName == nil {
		c.PeerName = NodeName
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	defInt := func(p *int, v int, name string) {
		if *p == 0 {
			*p = v
		} else if *p < 0 {
			bad("%s must be positive, got %d", name, *p)
		}
	}
	defInt(&c.QueueSize, 1024, "QueueSize")
	defInt(&c.QueueBytes, 64<<20, "QueueBytes")
	defInt(&c.MaxBatchBytes, 1<<20, "MaxBatchBytes")
	defInt(&c.MaxFrameSize, 64<<20, "MaxFrameSize")
	defInt(&c.MaxPendingHandshakes, 128, "MaxPendingHandshakes")
	if c.MaxFrameSize > 1<<31-1 {
		bad("MaxFrameSize must fit in 31 bits, got %d", c.MaxFrameSize)
	}
	defDur := func(p *time.Duration, v time.Duration, name string) {
		if *p == 0 {
			*p = v
		} else if *p < 0 {
			bad("%s must be positive, got %v", name, *p)
		}
	}
	defDur(&c.DialTimeout, 2*time.Second, "DialTimeout")
	defDur(&c.HandshakeTimeout, 5*time.Second, "HandshakeTimeout")
	defDur(&c.WriteTimeout, 5*time.Second, "WriteTimeout")
	defDur(&c.ReadTimeout, 5*time.Second, "ReadTimeout")
	defDur(&c.IdleTimeout, 30*time.Second, "IdleTimeout")
	defDur(&c.MinBackoff, 50*time.Millisecond, "MinBackoff")
	defDur(&c.MaxBackoff, 2*time.Second, "MaxBackoff")
	if c.MaxBackoff < c.MinBackoff {
		bad("MaxBackoff (%v) must not be less than MinBackoff (%v)", c.MaxBackoff, c.MinBackoff)
	}
	if c.TLS != nil {
		if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
			bad("TLS needs this node's certificate in Certificates or GetCertificate")
		}
		if c.TLS.RootCAs == nil {
			bad("TLS.RootCAs must hold the cluster CA that signs every node's certificate")
		}
		if c.TLS.InsecureSkipVerify {
			bad("TLS.InsecureSkipVerify would accept any peer; it is not allowed")
		}
	}
	return c, errors.Join(errs...)
}

// defaultAdvertiseAddr is the address to advertise for a listener at la
// when Config.AdvertiseAddr is empty: la itself if peers can dial it, else
// "" (advertise nothing).
func defaultAdvertiseAddr(la net.Addr) string {
	if la == nil || la.Network() != "tcp" {
		return ""
	}
	if s := la.String(); checkAdvertiseAddr(s) == nil {
		return s
	}
	return ""
}

// serverTLS is the TLS configuration for accepted connections.
func (c *Config) serverTLS() *tls.Config {
	s := c.TLS.Clone()
	s.ClientAuth = tls.RequireAndVerifyClientCert
	if s.ClientCAs == nil {
		s.ClientCAs = s.RootCAs
	}
	if s.MinVersion == 0 {
		s.MinVersion = tls.VersionTLS13
	}
	return s
}

// clientTLS is the TLS configuration for dialing peer id: the server's
// certificate must name id.
func (c *Config) clientTLS(id raft.NodeID) *tls.Config {
	s := c.TLS.Clone()
	s.ServerName = c.PeerName(id)
	if s.MinVersion == 0 {
		s.MinVersion = tls.VersionTLS13
	}
	if s.GetClientCertificate == nil && len(s.Certificates) == 0 && s.GetCertificate != nil {
		get := s.GetCertificate
		s.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := get(&tls.ClientHelloInfo{ServerName: c.PeerName(c.ID)})
			if cert == nil && err == nil {
				cert = &tls.Certificate{} // none: crypto/tls needs a non-nil value
			}
			return cert, err
		}
	}
	return s
}
