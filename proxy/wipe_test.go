package proxy

import (
	"bytes"
	"testing"
)

// An exchange going back to the pool wipes the scratch that held the
// credential as injected and a decoded caller token.
func TestExchangeWipesCredentialScratch(t *testing.T) {
	x := &exchange{buf: append(make([]byte, 0, 64), "Bearer the-credential"...), tok: append(make([]byte, 0, 32), "caller-token"...)}
	buf, tok := x.buf[:cap(x.buf)], x.tok[:cap(x.tok)]
	x.put()
	if bytes.ContainsAny(buf, "Bearcdentil") || bytes.ContainsAny(tok, "calertokn") {
		t.Errorf("left in the scratch: %q, %q", buf, tok)
	}
}
