package proxy

import (
	"bytes"
	"sort"
	"strings"
)

// router picks the route for a request: a route whose host equals the
// request's host (port ignored, case folded) wins over any route without
// one; among candidates the longest path prefix wins. A router is immutable
// and safe for concurrent use; match allocates nothing.
type router struct {
	byHost map[string][]*route // each sorted longest prefix first
	any    []*route            // routes without a host, longest prefix first
}

func newRouter(routes []*route) *router {
	r := &router{byHost: map[string][]*route{}}
	for _, rt := range routes {
		if rt.host == "" {
			r.any = append(r.any, rt)
		} else {
			r.byHost[rt.host] = append(r.byHost[rt.host], rt)
		}
	}
	byPrefix := func(s []*route) {
		sort.SliceStable(s, func(i, j int) bool { return len(s[i].prefix) > len(s[j].prefix) })
	}
	byPrefix(r.any)
	for _, s := range r.byHost {
		byPrefix(s)
	}
	return r
}

// match returns the route for host (a Host header or URI host, possibly with
// a port) and path (normalized), or nil.
func (r *router) match(host, path []byte) *route {
	if len(r.byHost) > 0 {
		var buf [256]byte
		if rt := matchPrefix(r.byHost[string(hostKey(buf[:0], host))], path); rt != nil {
			return rt
		}
	}
	return matchPrefix(r.any, path)
}

// hasHost reports whether some route names host.
func (r *router) hasHost(host []byte) bool {
	var buf [256]byte
	_, ok := r.byHost[string(hostKey(buf[:0], host))]
	return ok
}

func matchPrefix(routes []*route, path []byte) *route {
	for _, rt := range routes {
		if prefixMatch(rt.prefix, path) {
			return rt
		}
	}
	return nil
}

// prefixMatch reports whether path is under prefix. A prefix with a trailing
// slash also matches the bare directory: "/github/" matches "/github".
func prefixMatch(prefix string, path []byte) bool {
	if len(path) >= len(prefix) {
		return string(path[:len(prefix)]) == prefix
	}
	return len(path) == len(prefix)-1 && prefix[len(prefix)-1] == '/' && string(path) == prefix[:len(path)]
}

// hostKey appends host to dst lower-cased and without its port.
func hostKey(dst, host []byte) []byte {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.Contains(host[i:], []byte("]")) {
		host = host[:i]
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// normalizeHost is hostKey for configuration strings.
func normalizeHost(h string) string { return string(hostKey(nil, []byte(strings.TrimSpace(h)))) }
