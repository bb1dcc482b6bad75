package proxy

import "errors"

// errBadPath is a request path sidekey will not forward: a '%' not followed
// by two hex digits, or a segment that hides a dot segment behind an
// encoded slash or backslash ("..%2F").
var errBadPath = errors.New("malformed or ambiguous path")

// canonicalPath appends to dst the form of a raw request path (as the app
// sent it, without the query) that sidekey both routes on and forwards:
//
//   - each segment goes on byte for byte as the app sent it, escapes
//     included: "%2F" stays "%2F", so GitLab's "projects/group%2Fproject"
//     reaches the upstream as sent, and so do "%5C", "%25" and the case of
//     every escape's hex digits;
//   - repeated slashes collapse, and "." and ".." segments are resolved
//     (RFC 3986 §5.2.4), also when their dots are escaped ("%2e%2E"), so
//     "/github/../internal/" is "/internal/" and no spelling of a path
//     climbs out of a route's prefix or the upstream's base path;
//   - a segment that an upstream decoding "%2F" or "%5C" as a separator
//     would read as climbing ("..%2Finternal", "a%5C..") is refused: an
//     encoded slash is no separator here, but it may be one there.
//
// The result starts with '/', and keeps a trailing slash. It allocates
// only when dst must grow.
func canonicalPath(dst, raw []byte) ([]byte, error) {
	if isCanonical(raw) {
		return append(dst, raw...), nil
	}
	start := len(dst)
	dst = append(dst, '/')
	lastDot := false // the last segment was "." or ".."
	for i := 0; i < len(raw); {
		for i < len(raw) && raw[i] == '/' {
			i++
		}
		if i == len(raw) {
			break
		}
		j := i
		for j < len(raw) && raw[j] != '/' {
			j++
		}
		seg := raw[i:j]
		i = j
		kind, err := segmentKind(seg)
		if err != nil {
			return dst[:start], err
		}
		switch lastDot = true; kind {
		case segDot:
		case segDotDot:
			dst = dst[:parentEnd(dst, start)]
		default:
			dst, lastDot = append(append(dst, seg...), '/'), false
		}
	}
	// A trailing slash stays where the app sent one, and after a final dot
	// segment ("/a/b/.." is "/a/", RFC 3986 §5.2.4).
	if len(dst) > start+1 && !lastDot && (len(raw) == 0 || raw[len(raw)-1] != '/') {
		dst = dst[:len(dst)-1]
	}
	return dst, nil
}

type segKind uint8

const (
	segName segKind = iota
	segDot
	segDotDot
)

// segmentKind tells a dot segment, written plainly or with escaped dots,
// from any other, checking the segment's escapes. A segment holding an
// encoded slash or backslash (or a literal backslash) is a name here, but
// an upstream may split it there: it is refused when one of its parts
// would then be a dot segment.
func segmentKind(seg []byte) (segKind, error) {
	parts, bad := 1, false
	dots, other := 0, false // the current part: its leading dots, and whether anything else came
	isDots := func() bool { return !other && (dots == 1 || dots == 2) }
	for k := 0; k < len(seg); k++ {
		c := seg[k]
		if c == '%' {
			if k+2 >= len(seg) || !isHex(seg[k+1]) || !isHex(seg[k+2]) {
				return 0, errBadPath
			}
			c = unhex(seg[k+1])<<4 | unhex(seg[k+2])
			k += 2
		}
		switch {
		case c == '/' || c == '\\':
			bad = bad || isDots()
			parts, dots, other = parts+1, 0, false
		case c == '.' && !other:
			dots++
		default:
			other = true
		}
	}
	switch {
	case parts > 1 && (bad || isDots()):
		return 0, errBadPath
	case parts > 1 || !isDots():
		return segName, nil
	case dots == 1:
		return segDot, nil
	}
	return segDotDot, nil
}

// isCanonical reports a path that is its own canonical form, the common
// case: it starts with '/' and holds no escape, backslash, empty segment
// or segment starting with a dot.
func isCanonical(raw []byte) bool {
	if len(raw) == 0 || raw[0] != '/' {
		return false
	}
	for i, c := range raw {
		switch c {
		case '%', '\\':
			return false
		case '/':
			if i+1 < len(raw) && (raw[i+1] == '/' || raw[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

// parentEnd is the length of p (which ends in '/') once its last segment
// is removed; it never goes above the root at start.
func parentEnd(p []byte, start int) int {
	n := len(p) - 1 // the slash that ends the last segment
	if n <= start {
		return start + 1
	}
	for n > start && p[n-1] != '/' {
		n--
	}
	return max(n, start+1)
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
