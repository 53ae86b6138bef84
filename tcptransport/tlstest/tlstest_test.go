package tlstest

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
)

func TestNodeCertificatesVerifyAgainstTheirCAOnly(t *testing.T) {
	ca, err := NewCA("a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("b")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.NodeTLS(7)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Leaf
	opts := func(pool *x509.CertPool) x509.VerifyOptions {
		return x509.VerifyOptions{Roots: pool, DNSName: "node-7", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	if _, err := leaf.Verify(opts(ca.Pool())); err != nil {
		t.Errorf("node certificate does not verify against its CA: %v", err)
	}
	if _, err := leaf.Verify(opts(other.Pool())); err == nil {
		t.Error("node certificate verifies against another CA")
	}
	self, err := SelfSigned("node-7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := self.Leaf.Verify(opts(ca.Pool())); err == nil {
		t.Error("self-signed certificate verifies against the CA")
	}
	if _, err := SelfSigned(); err == nil {
		t.Error("a certificate without names was issued")
	}
}

func TestWriteFilesLoadBack(t *testing.T) {
	ca, err := NewCA("files")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.WriteFiles(dir, 1, 2); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, err := filepath.Glob(filepath.Join(dir, "ca.pem"))
	if err != nil || len(caPEM) != 1 {
		t.Fatalf("ca.pem missing: %v", err)
	}
	pool.AddCert(ca.Cert)
	for _, name := range []string{"node-1", "node-2"} {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s does not verify: %v", name, err)
		}
	}
}
