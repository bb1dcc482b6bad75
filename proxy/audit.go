package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/telemetry"
)

// audit writes the canonical line for one request (SPEC "Log lines"). It
// names the credential and its version and fingerprint, never its value; the
// logged path carries the app's query, which never holds the injected one.
func (p *Proxy) audit(ctx *fasthttp.RequestCtx, rec *record) {
	if !p.AuditRequests {
		return
	}
	f := logrus.Fields{
		"method":      string(ctx.Method()),
		"path":        string(rec.path),
		"status":      ctx.Response.StatusCode(),
		"duration_ms": float64(time.Since(rec.start).Microseconds()) / 1000,
		"request_id":  string(rec.rid),
		"trace_id":    "",
		"route":       "none",
	}
	if len(rec.path) == 0 {
		f["path"] = string(ctx.Path())
	}
	if rt := rec.route; rt != nil {
		f[telemetry.FieldRoute] = rt.name
		f["upstream"] = rt.upstream
		f[telemetry.FieldCredential] = rt.credential
		if v := rec.version; v != nil {
			f["credential_version"] = v.Number()
			f["fingerprint"] = v.Fingerprint()
		}
	}
	p.Log.WithFields(f).Info("request")
}

// requestIDs are a per-process random prefix and a counter: unique, cheap,
// and unguessable across processes.
type requestIDs struct {
	prefix string
	seq    atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (r *requestIDs) append(dst []byte) []byte {
	dst = append(dst, r.prefix...)
	return strconv.AppendUint(dst, r.seq.Add(1), 10)
}
