// Package certs holds sidekey's certificates in memory and hot-swaps them:
// the inbound listener's ACME certificates (Inbound, built on certmagic),
// outbound client certificates for mTLS to upstreams (ClientCert),
// pinned upstream CA bundles (CAPool), and the forward-proxy mode's
// certificate authority (ForwardCA).
//
// Nothing here writes to disk but the forward-proxy CA's two public
// certificate files (below). ACME state lives in MemoryStorage (storage:
// memory) or VaultStorage (storage: vault:PATH, shared by replicas, with
// check-and-set locks that a crashed holder loses after 30 s); certmagic's
// package defaults (file storage under HOME, a stderr logger) are never
// used. Private keys are registered with a SecretSet while they are live,
// so that the log redactor scrubs them; no error or log line carries one.
//
// # Inbound TLS
//
// Build, bind, wrap, then start:
//
//	in, err := certs.NewInbound(cfg.TLS, certs.InboundOptions{Log: log, Secrets: redactor, Vault: vc})
//	ln, err := net.Listen("tcp", cfg.TLS.Listen)   // a bind failure is a start-up failure
//	tlsLn := in.Listener(ln)                         // not tls.NewListener: see Retired
//	go server.Serve(tlsLn)                           // the fasthttp.Server
//	// http-01 only: bind cfg.TLS.ACME.HTTPListen, then
//	//   srv := in.HTTPChallengeServer(httpLn); go srv.Serve(httpLn); srv.Shutdown on exit
//	go in.Run(ctx)                                   // or in.Start(ctx); both stop when ctx ends
//
// Listener (and HTTPChallengeServer) must be called before Start: they tell
// certmagic the address challenges are answered on, so that it finds the
// port taken by the proxy's own listener and lets it answer instead of
// binding one itself. The TLS config offers "h2", "http/1.1" and "acme-tls/1"
// (the proxy serves HTTP/2 connections beside fasthttp's HTTP/1.1 ones).
//
// Start returns at once: the certificate is obtained in the background, and
// until it is held, handshakes fail and Ready is false (Err says why, for
// /readyz). Certificates lists each domain for GET /v1/certificates (kind
// "inbound"); sidekey_certificate_expiry_seconds is Info.NotAfter minus now.
//
// # Retiring connections after a renewal
//
// A renewed certificate is served to the next handshake at once. A
// keep-alive connection made with the old one is closed between requests,
// never during one: in the fasthttp handler, for every request on the TLS
// listener, after routing and before or after forwarding,
//
//	if in.Retired(ctx.Conn()) {
//		ctx.SetConnectionClose() // the response carries Connection: close
//	}
//
// Retired costs one atomic load when nothing changed. ServedSerial tells
// which certificate a connection got; Generation and Changed report each
// change.
//
// # Client certificates
//
// One ClientCert per entry of certificates, run beside the credential
// holders:
//
//	cc, err := certs.NewClientCert(c, certs.ClientOptions{Vault: vc, Log: log, Secrets: redactor})
//	go cc.Run(ctx)
//
// The route's HostClient takes it through its TLS config, with the pinned
// CA when upstream_tls.ca is set:
//
//	pool, err := certs.CAPool(*rt.UpstreamTLS.CA)   // nil CA: system roots
//	hc.TLSConfig = &tls.Config{ServerName: host, RootCAs: pool,
//		GetClientCertificate: cc.GetClientCertificate, MinVersion: tls.VersionTLS12}
//
// A new handshake presents the new certificate at once, but pooled
// upstream connections keep the one they were made with. To retire them
// after their in-flight request, the proxy watches cc.Changed(): on each
// change it builds a new HostClient for the routes using cc, swaps it in
// (an atomic pointer), and once the old client's in-flight requests have
// finished calls its CloseIdleConnections. Generation and Serial tell
// which certificate is current. Info feeds GET /v1/certificates (kind
// "client"); Ready and Err feed /readyz.
//
// # The forward-proxy CA
//
// ForwardCA signs the certificates with which the forward-proxy mode
// terminates intercepted TLS. Build it once from the intercepted hosts
// (the route hosts), write its public files, and serve leaves:
//
//	ca, err := certs.NewForwardCA(routeHosts, certs.ForwardCAOptions{Secrets: redactor})
//	// or, with forward_proxy.ca.cert/.key resolved: ForwardCAOptions{CertPEM: c, KeyPEM: k, ...}
//	rootsFrom, err := ca.WriteFiles(fp.CA.CertOut, fp.CA.BundleOut) // "" : no system roots found
//	// per CONNECT to an intercepted host (the TLS server side of the tunnel):
//	cfg, err := ca.TLSConfig(connectHost)     // ErrNotIntercepted for any other host
//	cfg.NextProtos = []string{"h2", "http/1.1"}
//	tlsConn := tls.Server(tunnel, cfg)
//	defer ca.Close()                           // when replaced or at exit
//
// A generated CA is ECDSA P-256, lives DefaultCALifetime (30 days), its key
// only in memory, and carries critical name constraints: the intercepted
// DNS names (and the names below them, as RFC 5280 defines the
// constraint), exactly the intercepted IP addresses or none at all, and no
// e-mail address or URI. A CA loaded from PEM is used as it is, without
// constraints imposed. Either way, leaves are minted only for the
// intercepted hosts themselves (never a subdomain): one per host, ECDSA
// P-256, with SKI and AKI (Python 3.13 needs the AKI), valid at most
// DefaultLeafLifetime and never past the CA, reissued when a third of
// their life is left. They are held in a bounded LRU cache
// (DefaultLeafCacheSize) and minted once per host however many handshakes
// ask at the same time; a cached GetCertificate or Leaf does not allocate.
// cert_out and bundle_out (the system's roots plus the CA) are the only
// files written, atomically and mode 0644; no key is ever written.
// Info feeds GET /v1/certificates (kind "forward-ca"); Ready and Err feed
// /readyz.
package certs
