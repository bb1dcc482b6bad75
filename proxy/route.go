package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sidekey/sidekey/config"
	"github.com/sidekey/sidekey/injector"
	"github.com/sidekey/sidekey/telemetry"
)

// route is a config.Route compiled for the request path: its upstream
// client, its injection form and the holder of its credential. Immutable.
type route struct {
	name     string
	host     string // lower case, no port; "" matches any host
	prefix   string
	strip    bool
	basePath string // upstream path without its trailing slash
	upHost   string // Host header sent upstream
	upName   string // the upstream's host name, without port, lower case
	upPort   string // the upstream's port, explicit or the scheme's default
	upstream string // upstream URL as configured, for logs
	timeout  time.Duration
	client   atomic.Pointer[fasthttp.HostClient] // swapped when the client certificate changes
	protocol string                              // config.ProtoHTTP1, ProtoH2, ProtoH2C, ProtoAuto
	h2       atomic.Pointer[h2Client]            // protocol h2, h2c or auto; swapped with client
	tls      *tls.Config                         // nil for plain http
	cert     ClientCertificate                   // nil without upstream_tls.client_cert
	addr     string                              // dial address, host:port

	cred       *routeCred   // the credential injected; nil when nothing is
	byCaller   []*routeCred // by caller index: that caller's own credential (inject.by_caller); nil takes cred
	callers    []bool       // by caller index: admitted; nil admits every caller
	place      tokenPlace   // where the app's request may carry a caller token
	form       injector.Form
	queryParam string // the injected query parameter, redacted in logs
	// signBody: the form signs a hash of the body, so a streamed body is
	// read into memory first (aws-sigv4 for services other than S3).
	signBody  bool
	scheme    string
	metrics   *telemetry.RouteMetrics // nil without metrics
	scrubbed  *telemetry.Counter      // sidekey_secrets_scrubbed_total{route}; nil without metrics
	bodyScrub *bodyScrub              // scrub_body: true; nil otherwise
	dialer    func(string) (net.Conn, error)
	// auditFields are the route's fixed audit fields (route, upstream),
	// escaped once here rather than per request.
	auditFields auditKey
}

// routeCred is a credential as a route injects it. Immutable but for the
// audit fields it keeps of the last version it saw.
type routeCred struct {
	name         string
	holder       *injector.Holder
	fields       auditKey                     // the credential field, escaped
	versionAudit atomic.Pointer[versionAudit] // the audit fields of the last version used
}

func newRouteCred(name string, holders Holders) (*routeCred, error) {
	h := holders.Holder(name)
	if h == nil {
		return nil, fmt.Errorf("credential %q is not defined", name)
	}
	rc := &routeCred{name: name, holder: h}
	rc.fields = inBothFormats(func(b []byte, text bool) []byte { return fieldStr(b, keyCredential, name, text) })
	return rc, nil
}

// credFor is the credential injected for c's requests (c nil: anonymous).
func (rt *route) credFor(c *caller) *routeCred {
	if c != nil && c.idx < len(rt.byCaller) && rt.byCaller[c.idx] != nil {
		return rt.byCaller[c.idx]
	}
	return rt.cred
}

// admits reports whether the route admits c (nil: no caller named).
func (rt *route) admits(c *caller) bool {
	if rt.callers == nil {
		return true
	}
	return c != nil && c.idx < len(rt.callers) && rt.callers[c.idx]
}

// ClientCertificate is an outbound client certificate that renews itself;
// *certs.ClientCert implements it.
type ClientCertificate interface {
	GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Changed returns a channel closed when the next certificate is in use.
	Changed() <-chan struct{}
}

// Holders finds a credential's holder by name; *injector.Set implements it.
type Holders interface {
	Holder(name string) *injector.Holder
}

// clientReadBuffer bounds upstream response headers. clientWriteBuffer only
// gathers a request's head and small body into one write; larger bodies go
// to the connection directly, so a bigger buffer would only cost memory for
// every request in flight.
const (
	clientReadBuffer  = 16 << 10
	clientWriteBuffer = 4 << 10
)

func compileRoute(rc config.Route, holders Holders, callers *callerTable, opts Options) (*route, error) {
	u := rc.Upstream
	rt := &route{
		name:     rc.Name,
		host:     normalizeHost(rc.Host),
		prefix:   rc.PathPrefix,
		strip:    rc.StripPrefix,
		basePath: strings.TrimSuffix(u.EscapedPath(), "/"),
		upHost:   u.Host,
		upstream: u.Scheme + "://" + u.Host + u.EscapedPath(),
		timeout:  rc.Timeout,
		addr:     dialAddr(u.Scheme, u.Host),
		scheme:   u.Scheme,
		dialer:   opts.Dial,
		protocol: rc.Protocol,
	}
	if rt.protocol == "" {
		rt.protocol = config.ProtoHTTP1
	}
	if rt.prefix == "" {
		rt.prefix = "/"
	}
	rt.upName = strings.ToLower(u.Hostname())
	if rt.upPort = u.Port(); rt.upPort == "" {
		rt.upPort = rt.defaultPort()
	}
	if err := rt.compileTLS(u.Scheme, u.Hostname(), rc.UpstreamTLS, opts); err != nil {
		return nil, fmt.Errorf("route %s: %w", rc.Name, err)
	}
	if err := rt.compileInject(rc.Inject, holders, callers); err != nil {
		return nil, fmt.Errorf("route %s: %w", rc.Name, err)
	}
	if err := rt.compileCallers(rc.Callers, callers); err != nil {
		return nil, fmt.Errorf("route %s: %w", rc.Name, err)
	}
	if opts.Metrics != nil {
		rt.scrubbed = opts.Metrics.SecretsScrubbed(rt.name)
	}
	if rc.ScrubBody && opts.Scrub != nil {
		rt.bodyScrub = &bodyScrub{sc: opts.Scrub, counter: rt.scrubbed}
	}
	rt.client.Store(rt.newClient())
	if rt.protocol != config.ProtoHTTP1 {
		rt.h2.Store(rt.newH2Client())
	}
	rt.auditFields = routeFields(rt)
	return rt, nil
}

// do sends a prepared request upstream with the route's client for its
// protocol, and fills resp.
func (rt *route) do(req *fasthttp.Request, resp *fasthttp.Response) error {
	if c := rt.h2.Load(); c != nil {
		return c.Do(req, resp)
	}
	return rt.client.Load().Do(req, resp)
}

// speaksH2 reports a route that can carry HTTP/2 end to end (gRPC).
func (rt *route) speaksH2() bool { return rt.protocol != config.ProtoHTTP1 }

// compileTLS sets the route's TLS configuration: verification always on,
// the upstream's CA pinned when upstream_tls.ca is set, and the client
// certificate presented through a callback, so a renewed certificate needs
// no new configuration.
func (rt *route) compileTLS(scheme, serverName string, ut *config.UpstreamTLS, opts Options) error {
	if scheme != "https" {
		return nil
	}
	rt.tls = &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if ut == nil {
		return nil
	}
	if ut.ServerName != "" {
		rt.tls.ServerName = ut.ServerName
	}
	if ut.CA != nil {
		if opts.CAPool == nil {
			return errors.New("upstream_tls.ca: no CA loader")
		}
		pool, err := opts.CAPool(*ut.CA)
		if err != nil {
			return fmt.Errorf("upstream_tls.ca: %w", err)
		}
		rt.tls.RootCAs = pool
	}
	if ut.ClientCert != "" {
		if opts.ClientCert == nil || opts.ClientCert(ut.ClientCert) == nil {
			return fmt.Errorf("upstream_tls.client_cert: no certificate %q", ut.ClientCert)
		}
		rt.cert = opts.ClientCert(ut.ClientCert)
		rt.tls.GetClientCertificate = rt.cert.GetClientCertificate
	}
	return nil
}

// newClient builds the route's upstream client. Each client keeps its own
// connection pool, so swapping in a new one retires connections made with
// an older client certificate.
func (rt *route) newClient() *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                     rt.addr,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true, // the proxy forwards the canonical path it built

		IsTLS:               rt.tls != nil,
		TLSConfig:           rt.tls,
		MaxConns:            1024,
		MaxIdleConnDuration: 30 * time.Second,
		ReadBufferSize:      clientReadBuffer,
		WriteBufferSize:     clientWriteBuffer,
		Transport:           upstreamTransport{bufferMax: bufferedBodyMax, scrub: rt.bodyScrub},
		Dial:                rt.dialIdle,
	}
}

// watchClientCert swaps in a new client each time the route's client
// certificate changes, until stop is closed. New requests then handshake with
// the new certificate; the old client's connections are closed once the
// requests using them have finished, never mid-request.
func (rt *route) watchClientCert(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-rt.cert.Changed():
		}
		old := rt.client.Swap(rt.newClient())
		go retireClient(old, stop)
		if rt.protocol != config.ProtoHTTP1 {
			oldH2 := rt.h2.Swap(rt.newH2Client())
			go retireH2Client(oldH2, stop)
		}
	}
}

// retireH2Client closes a replaced HTTP/2 client's connections once idle:
// a connection with open streams stays until they end, so no stream is cut.
func retireH2Client(c *h2Client, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range 600 {
		c.idle()
		select {
		case <-tick.C:
		case <-stop:
			c.idle()
			return
		}
	}
}

// retireClient closes a replaced client's connections as they fall idle.
func retireClient(c *fasthttp.HostClient, stop <-chan struct{}) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Minute)
	for c.ConnsCount() > 0 && time.Now().Before(deadline) {
		c.CloseIdleConnections()
		select {
		case <-tick.C:
		case <-stop:
			c.CloseIdleConnections()
			return
		}
	}
}

func (rt *route) compileInject(in *config.Inject, holders Holders, callers *callerTable) error {
	if in == nil {
		return nil
	}
	form, err := injector.NewForm(*in)
	if err != nil {
		return err
	}
	if rt.cred, err = newRouteCred(in.Credential, holders); err != nil {
		return err
	}
	for name, cred := range in.ByCaller {
		c := callers.byName(name)
		if c == nil {
			return fmt.Errorf("inject.by_caller: no caller %q", name)
		}
		if rt.byCaller == nil {
			rt.byCaller = make([]*routeCred, len(callers.all))
		}
		if rt.byCaller[c.idx], err = newRouteCred(cred, holders); err != nil {
			return fmt.Errorf("inject.by_caller: %w", err)
		}
	}
	rt.form = form
	rt.place = newTokenPlace(*in)
	rt.queryParam = injector.QueryParam(form)
	rt.signBody = injector.NeedsSignableRequest(form) && !isS3(in.Service)
	return nil
}

// compileCallers limits the route to the callers it lists.
func (rt *route) compileCallers(names []string, callers *callerTable) error {
	if names == nil {
		return nil
	}
	rt.callers = make([]bool, len(callers.all))
	for _, name := range names {
		c := callers.byName(name)
		if c == nil {
			return fmt.Errorf("callers: no caller %q", name)
		}
		rt.callers[c.idx] = true
	}
	return nil
}

// credentials lists the credentials the route may inject.
func (rt *route) credentials() []string {
	var out []string
	if rt.cred != nil {
		out = append(out, rt.cred.name)
	}
	for _, rc := range rt.byCaller {
		if rc != nil {
			out = append(out, rc.name)
		}
	}
	return out
}

// dialIdle dials the upstream for the route's client; every connection
// carries the route timeout as an idle bound on reads and writes.
func (rt *route) dialIdle(addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if rt.dialer != nil {
		c, err = rt.dialer(addr)
	} else {
		c, err = fasthttp.DialTimeout(addr, rt.dialTimeout())
	}
	if err != nil || rt.timeout <= 0 {
		return c, err
	}
	return newIdleConn(c, rt.timeout), nil
}

// dialTimeout bounds connection set-up: the route timeout, at most 10s.
func (rt *route) dialTimeout() time.Duration {
	if rt.timeout > 0 && rt.timeout < 10*time.Second {
		return rt.timeout
	}
	return 10 * time.Second
}

// isS3 reports an S3 service name; S3 accepts UNSIGNED-PAYLOAD.
func isS3(service string) bool { return service == "s3" || strings.HasPrefix(service, "s3-") }

func dialAddr(scheme, host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if scheme == "https" {
		return net.JoinHostPort(host, "443")
	}
	return net.JoinHostPort(host, "80")
}
