package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/sidekey/sidekey/injector"
)

// maxPEMFile bounds a certificate or key file read.
const maxPEMFile = 1 << 20

// runFile loads the certificate and key files now and again whenever
// either changes (rewritten, replaced by a rename, or swapped in by a
// symlink change such as a Kubernetes secret volume update), until ctx
// ends. A reload that fails, for instance between the writes of a new
// certificate and its key, keeps the current certificate; the next change
// retries.
func (c *ClientCert) runFile(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	poke() // load now, even if the files cannot be watched
	var wg sync.WaitGroup
	for _, p := range []string{c.cfg.CertFile, c.cfg.KeyFile} {
		wg.Go(func() { c.watch(ctx, p, poke) })
	}
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			c.reloadFile()
		}
	}
}

// watch keeps a watch on path, calling changed on every change (and once
// when the watch is in place), until ctx ends. When the file cannot be
// watched at all it retries with backoff.
func (c *ClientCert) watch(ctx context.Context, path string, changed func()) {
	for failures := 0; ; failures++ {
		err := injector.FileSource{Path: path}.Watch(ctx, changed)
		if ctx.Err() != nil {
			return
		}
		delay := injector.Backoff(failures, c.lo, c.hi, c.random())
		c.log.WithField("error", fmt.Sprint(err)).WithField("retry_in", delay.String()).Warn("cannot watch client certificate file")
		if !c.sleep(ctx, delay) {
			return
		}
	}
}

// reloadFile reads both files and swaps the pair in when it is valid.
func (c *ClientCert) reloadFile() {
	certPEM, err := readPEMFile(c.cfg.CertFile)
	if err == nil {
		var keyPEM []byte
		if keyPEM, err = readPEMFile(c.cfg.KeyFile); err == nil {
			var cert *tls.Certificate
			if cert, err = c.keyPair(certPEM, keyPEM); err == nil {
				c.store(cert)
				return
			}
		}
	}
	c.fail(err, 0)
}

func readPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("reading %s: larger than %d bytes", path, maxPEMFile)
	}
	return b, nil
}
