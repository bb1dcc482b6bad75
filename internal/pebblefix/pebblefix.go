// Package pebblefix works around a bug of Pebble v2.10.1, Let's Encrypt's
// test CA, for the tests that run it in-process (certs, e2e).
//
// Pebble indexes orders by the hex of a certificate's serial number without
// the leading zero byte that DER gives a serial whose top bit is set (about
// one certificate in 256), but looks up the serial of an ARI certificate ID
// as sent, with that byte. A renewal order naming such a certificate in
// "replaces" (as certmagic's are) gets HTTP 500, and the client retries
// without it only a minute or more later. Orders turns that answer into the
// one a real CA gives for a "replaces" it will not honour, alreadyReplaced,
// on which the client retries at once without it.
package pebblefix

import (
	"bytes"
	"net/http"
	"net/http/httptest"
)

// NewOrderPath is Pebble's new-order endpoint.
const NewOrderPath = "/order-plz"

// Orders wraps Pebble's ACME handler h; requests other than new orders pass
// through untouched.
func Orders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != NewOrderPath {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		if rec.Code == http.StatusInternalServerError &&
			bytes.Contains(body, []byte("could not find order resulting in the given certificate serial number")) {
			body = []byte(`{"type":"urn:ietf:params:acme:error:alreadyReplaced",` +
				`"detail":"Pebble cannot find the replaced certificate's order (a serial number with a leading zero byte)","status":409}`)
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Del("Content-Length")
			rec.Code = http.StatusConflict
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}
