package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// peer is one proxy under test: how to configure and start it.
type peer struct {
	name  string // flag value
	label string // table row; %s is the detected version, when the peer has one
	tool  string // external executable it needs; "" for binaries the harness builds
	// rotate: the upstream issues a new token into the credential file
	// every -rotate-every, instead of accepting one static token.
	rotate bool
	// alternate: the run is cut into windows of -window, and the upstream
	// issues into the credential file in every other one only (see
	// alternate in bench.go).
	alternate bool
	// goload: driven by the harness's own load client (cmd/fwdload) over
	// keep-alive connections, not wrk; forward: through sidekey's forward
	// proxy, each connection a CONNECT intercepted with TLS.
	goload, forward bool
	// grpc: a row of the gRPC table, driven by cmd/grpcload against
	// cmd/grpcupstream in one layout at one connection count (grpcCell).
	grpc bool
	// setup writes the peer's configuration into s.dir and returns the
	// command that runs it in the foreground, and extra environment.
	setup func(s *site) (argv, env []string, err error)
}

// site is one run's addresses and paths, given to a peer's setup.
type site struct {
	dir       string // the run's own directory
	listen    string // 127.0.0.1:port the proxy listens on
	admin     string // 127.0.0.1:port for sidekey's admin API
	upstream  string // 127.0.0.1:port of the upstream
	stats     string // 127.0.0.1:port of the upstream's GET /_stats: upstream's own, or the gRPC upstream's second port
	token     string // the static token of the peers
	tokenFile string // sidekey's credential file
	bin       string // the peer's executable
	forward   string // 127.0.0.1:port of sidekey's forward-proxy listener
	host      string // the Host of every request; "" for the listen address
}

// Names of the peers, in table order.
const (
	peerSidekey       = "sidekey"
	peerSidekeyRotate = "sidekey-rotate"
	peerSidekeyAlt    = "sidekey-alternate"
	peerSidekeyCaller = "sidekey-callers"
	peerSidekeyBase   = "sidekey-base"
	peerSidekeyGo     = "sidekey-goload"
	peerSidekeyFwd    = "sidekey-forward"
	peerNginx         = "nginx"
	peerHAProxy       = "haproxy"
	peerFasthttp      = "fasthttp"
	peerNetHTTP       = "nethttp"
	peerCaddy         = "caddy"
	peerGRPCSidekey   = "grpc-sidekey"
	peerGRPCNginx     = "grpc-nginx"
	peerGRPCDirect    = "grpc-direct"
)

func peers() []peer {
	return []peer{
		{name: peerSidekey, label: "sidekey (audit line and metrics on)", setup: sidekeySetup},
		{name: peerSidekeyRotate, label: "sidekey, credential rotating every %s", rotate: true, setup: sidekeySetup},
		{name: peerSidekeyAlt, label: "sidekey, rotating in every other window", rotate: true, alternate: true, setup: sidekeySetup},
		{name: peerSidekeyCaller, label: "sidekey, the app named by a caller token (3 callers)", setup: sidekeyCallersSetup},
		{name: peerSidekeyBase, label: "sidekey, the base build (-sidekey-base)", setup: sidekeySetup},
		{name: peerSidekeyGo, label: "sidekey app listener (Go load client)", goload: true, setup: sidekeyForwardSetup},
		{name: peerSidekeyFwd, label: "sidekey forward proxy, intercepted CONNECT + TLS (Go load client)", goload: true, forward: true,
			setup: sidekeyForwardSetup},
		{name: peerNginx, label: "nginx %s, 1 worker, upstream keepalive", tool: "nginx", setup: nginxSetup},
		{name: peerHAProxy, label: "HAProxy %s, 1 thread", tool: "haproxy", setup: haproxySetup},
		{name: peerFasthttp, label: "bare fasthttp HostClient proxy (no features)", setup: helperSetup},
		{name: peerNetHTTP, label: "Go net/http ReverseProxy (Vault Proxy class)", setup: helperSetup},
		{name: peerCaddy, label: "Caddy %s reverse_proxy + header_up", tool: "caddy", setup: caddySetup},
		{name: peerGRPCSidekey, label: "sidekey, h2c route (audit line and metrics on)", grpc: true, setup: sidekeyGRPCSetup},
		{name: peerGRPCNginx, label: "nginx %s grpc_pass, 1 worker, upstream keepalive", tool: "nginx", grpc: true, setup: nginxGRPCSetup},
		{name: peerGRPCDirect, label: "direct: client to upstream, no proxy", grpc: true, setup: directSetup},
	}
}

func peerNames() []string {
	var out []string
	for _, p := range peers() {
		out = append(out, p.name)
	}
	return out
}

// sidekeySetup: a file credential (rewritten by the upstream when the peer
// rotates), one bearer route, the audit line on. Metrics are always on.
// The audit line goes to stderr, which the harness sends to a file.
func sidekeySetup(s *site) ([]string, []string, error) {
	conf := fmt.Sprintf(`listen: %s
shutdown_timeout: 5s
admin:
  listen: %s
log:
  level: info
  format: json
  requests: true
credentials:
  upstream:
    source: file
    path: %s
routes:
  - name: bench
    match: { path_prefix: / }
    upstream: http://%s
    inject: { credential: upstream, as: bearer }
`, s.listen, s.admin, s.tokenFile, s.upstream)
	path := filepath.Join(s.dir, "sidekey.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	return []string{s.bin, "run", "-c", path}, nil, nil
}

// forwardHost is the route host of the forward-proxy runs, which the
// harness's load client CONNECTs to (and names in Host on the app
// listener); nothing resolves it.
const forwardHost = "api.bench.example"

// sidekeyForwardSetup is sidekeySetup with the route matched by host
// (forwardHost) and a forward-proxy listener whose CA goes to the run's
// directory: the forward-proxy runs and the app-listener runs measured the
// same way use this one configuration.
func sidekeyForwardSetup(s *site) ([]string, []string, error) {
	argv, _, err := sidekeySetup(s)
	if err != nil {
		return nil, nil, err
	}
	path := argv[len(argv)-1]
	conf, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	conf = []byte(strings.Replace(string(conf), "match: { path_prefix: / }", "match: { host: "+forwardHost+", path_prefix: / }", 1))
	conf = append(conf, fmt.Sprintf(`forward_proxy:
  listen: %s
  ca: { cert_out: %s }
`, s.forward, filepath.Join(s.dir, "forward-ca.pem"))...)
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return nil, nil, err
	}
	s.host = forwardHost
	return argv, nil, nil
}

// sidekeyGRPCSetup is sidekeySetup with the route speaking h2c to the
// gRPC upstream.
func sidekeyGRPCSetup(s *site) ([]string, []string, error) {
	argv, env, err := sidekeySetup(s)
	if err != nil {
		return nil, nil, err
	}
	path := argv[len(argv)-1]
	conf, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(path, append(conf, "    protocol: h2c\n"...), 0o600); err != nil {
		return nil, nil, err
	}
	return argv, env, nil
}

// nginxGRPCSetup: nginxSetup's process and log, an h2c listener and
// grpc_pass to the gRPC upstream over kept-alive connections, with
// grpc_set_header replacing the client's Authorization.
func nginxGRPCSetup(s *site) ([]string, []string, error) {
	d := s.dir
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log %[1]s/access.log combined buffer=64k flush=1s;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    upstream grpcbench {
        server %[2]s;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen %[3]s http2;
        location / {
            grpc_pass grpc://grpcbench;
            grpc_set_header Authorization "Bearer %[4]s";
        }
    }
}
`, d, s.upstream, s.listen, s.token)
	path := filepath.Join(d, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	return []string{s.bin, "-p", d + "/", "-c", path, "-e", filepath.Join(d, "error.log")}, nil, nil
}

// directSetup: no proxy; the client calls the upstream with the token.
func directSetup(*site) ([]string, []string, error) { return nil, nil, nil }

// benchCallerVar holds the caller token of sidekey-callers: the very
// Authorization the application sends, so that every peer gets the same
// requests. The route injects in that place, so sidekey reads the caller
// token there, compares it with each of three caller tokens, removes it
// and injects the credential.
const benchCallerVar = "SIDEKEY_BENCH_CALLER"

// sidekeyCallersSetup is sidekeySetup with three token callers, the route
// admitting only the application's.
func sidekeyCallersSetup(s *site) ([]string, []string, error) {
	argv, _, err := sidekeySetup(s)
	if err != nil {
		return nil, nil, err
	}
	path := argv[len(argv)-1]
	conf, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	conf = append(conf, fmt.Sprintf(`    callers: [app]
callers:
  app: { token: env:%s }
  deploy: { token: env:SIDEKEY_BENCH_DEPLOY }
  ci: { token: env:SIDEKEY_BENCH_CI }
`, benchCallerVar)...)
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return nil, nil, err
	}
	caller, _ := strings.CutPrefix(appAuthorization, "Bearer ")
	return argv, []string{benchCallerVar + "=" + caller, "SIDEKEY_BENCH_DEPLOY=deploy-caller-token-for-bench",
		"SIDEKEY_BENCH_CI=ci-caller-token-for-the-bench"}, nil
}

// nginxSetup: one process (no master), one worker's worth of connections,
// upstream keepalive 64, the access log to a buffered file (the nearest
// equivalent of sidekey's audit line). keepalive_requests is raised on both
// sides so that neither wrk's nor the upstream connections are recycled
// every 1000 requests.
func nginxSetup(s *site) ([]string, []string, error) {
	d := s.dir
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log %[1]s/access.log combined buffer=64k flush=1s;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    upstream bench {
        server %[2]s;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer %[4]s";
        }
    }
}
`, d, s.upstream, s.listen, s.token)
	path := filepath.Join(d, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	return []string{s.bin, "-p", d + "/", "-c", path, "-e", filepath.Join(d, "error.log")}, nil, nil
}

// haproxySetup: one thread, foreground, no log, idle upstream connections
// shared between clients.
func haproxySetup(s *site) ([]string, []string, error) {
	conf := fmt.Sprintf(`global
    nbthread 1
    maxconn 8192

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always

frontend bench
    bind %s
    http-request set-header Authorization "Bearer %s"
    default_backend upstream

backend upstream
    server up %s
`, s.listen, s.token, s.upstream)
	path := filepath.Join(s.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	return []string{s.bin, "-db", "-f", path}, nil, nil
}

// caddySetup: reverse_proxy with header_up, no admin endpoint, no
// automatic HTTPS, no access log (Caddy's default), state in the run dir.
func caddySetup(s *site) ([]string, []string, error) {
	host, port, _ := strings.Cut(s.listen, ":")
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
	storage file_system %s
}

http://%s:%s {
	bind %s
	reverse_proxy %s {
		header_up Authorization "Bearer %s"
	}
}
`, filepath.Join(s.dir, "caddy"), host, port, host, s.upstream, s.token)
	path := filepath.Join(s.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	env := []string{"HOME=" + s.dir, "XDG_DATA_HOME=" + s.dir, "XDG_CONFIG_HOME=" + s.dir}
	return []string{s.bin, "run", "--config", path, "--adapter", "caddyfile"}, env, nil
}

// helperSetup runs one of the bench's own proxies (fastproxy, stdproxy).
func helperSetup(s *site) ([]string, []string, error) {
	return []string{s.bin, "-listen", s.listen, "-upstream", s.upstream, "-token", s.token}, nil, nil
}

// helperBinary is the bench command that implements a built peer.
func helperBinary(name string) string {
	switch name {
	case peerFasthttp:
		return "fastproxy"
	case peerNetHTTP:
		return "stdproxy"
	case peerSidekey, peerSidekeyRotate, peerSidekeyAlt, peerSidekeyCaller, peerSidekeyGo, peerSidekeyFwd, peerGRPCSidekey:
		return "sidekey"
	case peerSidekeyBase:
		return "sidekey-base"
	}
	return ""
}

// isSidekey reports whether the peer is sidekey, in any of its runs.
func isSidekey(name string) bool {
	b := helperBinary(name)
	return b == "sidekey" || b == "sidekey-base"
}
