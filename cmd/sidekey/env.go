package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/sidekey/sidekey/config"
)

// cmdEnv prints the shell lines that point a process at the forward proxy
// of a config file, for eval "$(sidekey env -c FILE)". It prints no secret:
// with callers set it says how to put one in the proxy URLs instead.
func cmdEnv(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	path, ok := configFlag("env", args, stderr)
	if !ok {
		return exitUsage
	}
	cfg, err := loadConfig(path, stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	fp := cfg.ForwardProxy
	if fp == nil {
		fmt.Fprintf(stderr, "sidekey env: %s has no forward_proxy section\n", path)
		return exitFailed
	}
	fmt.Fprintf(stdout, "# sidekey forward proxy of %s: eval \"$(sidekey env -c %s)\"\n", path, shellQuote(path))
	for _, v := range forwardEnv(proxyURL(fp.Listen, ""), fp.CA) {
		fmt.Fprintf(stdout, "export %s=%s\n", v.name, shellQuote(v.value))
	}
	if fp.CA.CertOut == "" && fp.CA.BundleOut == "" {
		fmt.Fprintln(stdout, "# forward_proxy.ca writes no file: the apps must trust the CA (ca.cert) from their own store")
	} else if fp.CA.BundleOut == "" {
		fmt.Fprintln(stdout, "# no ca.bundle_out: the CA variables name the CA alone, so allow_tunnel destinations fail verification")
	}
	fmt.Fprintln(stdout, "# Node before 24 ignores NODE_USE_ENV_PROXY: use undici's EnvHttpProxyAgent (see the README)")
	if hint := callerHint(cfg, fp.Listen); hint != "" {
		fmt.Fprint(stdout, hint)
	}
	return exitOK
}

// envVar is one variable of a process's environment.
type envVar struct{ name, value string }

// noProxy are the destinations every client reaches directly: loopback.
const noProxy = "localhost,127.0.0.1,::1"

// forwardEnv is the environment that points a process at the forward proxy
// at proxy (a URL) and makes it trust the CA's files: the proxy variables
// in both cases (curl reads only http_proxy in lower case, Go and Python
// either), and each runtime's CA variable. Which file each one names:
// those that replace the trusted roots (SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
// CURL_CA_BUNDLE, GIT_SSL_CAINFO, AWS_CA_BUNDLE) the bundle, so that other
// hosts still verify; NODE_EXTRA_CA_CERTS, which adds to Node's roots, the
// CA alone.
func forwardEnv(proxy string, ca config.ForwardCA) []envVar {
	vars := []envVar{
		{"HTTPS_PROXY", proxy}, {"https_proxy", proxy},
		{"HTTP_PROXY", proxy}, {"http_proxy", proxy},
		{"NO_PROXY", noProxy}, {"no_proxy", noProxy},
	}
	bundle, cert := ca.BundleOut, ca.CertOut
	if bundle == "" {
		bundle = cert
	}
	if cert == "" {
		cert = bundle
	}
	if bundle != "" {
		for _, name := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"} {
			vars = append(vars, envVar{name, bundle})
		}
		vars = append(vars, envVar{"NODE_EXTRA_CA_CERTS", cert})
	}
	return append(vars, envVar{"NODE_USE_ENV_PROXY", "1"})
}

// proxyURL is the URL a local client uses for a listen address: the
// address itself, or loopback for one that listens on every interface.
// userinfo, when set, is "name:token" (already escaped).
func proxyURL(listen, userinfo string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if a, err := netip.ParseAddr(host); host == "" || err == nil && a.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && a.Is6() {
			host = "::1"
		}
	}
	if userinfo != "" {
		userinfo += "@"
	}
	return "http://" + userinfo + net.JoinHostPort(host, port)
}

// callerHint says, when callers are set, how to name one in the proxy URL,
// taking the token from where the config reads it, never printing it.
func callerHint(cfg *config.Config, listen string) string {
	if len(cfg.Callers) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("# callers are set: a request must name one. Put a caller and its token in the proxy URLs\n")
	b.WriteString("# (the token URL-encoded if it holds characters other than letters, digits and -._~), e.g.\n")
	i := slices.IndexFunc(cfg.Callers, func(c config.Caller) bool { return c.Token != nil })
	if i < 0 {
		return b.String()
	}
	c := cfg.Callers[i]
	tok := "TOKEN"
	switch c.Token.Kind {
	case config.RefEnv:
		tok = "${" + c.Token.Name + "}"
	case config.RefFile:
		tok = "$(cat " + shellQuote(c.Token.Name) + ")"
	}
	fmt.Fprintf(&b, "#   P=\"%s\"\n", proxyURL(listen, c.Name+":"+tok))
	b.WriteString("#   export HTTPS_PROXY=\"$P\" HTTP_PROXY=\"$P\" https_proxy=\"$P\" http_proxy=\"$P\"\n")
	return b.String()
}

// shellQuote quotes s for a POSIX shell, in single quotes unless it needs
// none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:,@%+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
